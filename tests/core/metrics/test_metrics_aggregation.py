import pytest
import torch

from tml.core.metrics.aggregation import StableMean, stable_mean_dist_reduce_fn, update_mean


def _f64(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_update_mean_is_a_weighted_running_mean():
    mean, weight_sum = update_mean(_f64(0.0)[0], _f64(0.0)[0], torch.tensor([1.0, 3.0]), torch.tensor([1.0, 3.0]))
    assert (mean.item(), weight_sum.item()) == pytest.approx((2.5, 4.0))  # (1 + 9) / 4
    mean, weight_sum = update_mean(mean, weight_sum, torch.tensor([10.0]), torch.tensor([4.0]))
    assert (mean.item(), weight_sum.item()) == pytest.approx((6.25, 8.0))  # (1 + 9 + 40) / 8


def test_zero_weight_batch_leaves_the_state_unchanged():
    mean, weight_sum = update_mean(_f64(0.0)[0], _f64(0.0)[0], torch.tensor([5.0, 7.0]), 0.0)
    assert (mean.item(), weight_sum.item()) == (0.0, 0.0)


def test_dist_reduce_merges_mean_and_weight_pairs():
    merged = stable_mean_dist_reduce_fn(_f64(2.5, 4.0, 10.0, 4.0, 0.0, 0.0).reshape(3, 2))
    torch.testing.assert_close(merged, _f64(6.25, 8.0))
    torch.testing.assert_close(stable_mean_dist_reduce_fn(torch.zeros(2, 2, dtype=torch.float64)), _f64(0.0, 0.0))


def test_stable_mean_matches_a_float64_weighted_mean_on_large_inputs():
    generator = torch.Generator().manual_seed(0)
    metric = StableMean()
    values, weights = [], []
    for _ in range(100):
        value = (1e4 + torch.randn(20_000, generator=generator)).float()
        weight = torch.rand(20_000, generator=generator)
        metric.update(value, weight)
        values.append(value)
        weights.append(weight)
    value64, weight64 = torch.cat(values).double(), torch.cat(weights).double()
    reference = (value64 * weight64).sum() / weight64.sum()
    assert abs(metric.compute().item() - reference.item()) < 1e-8
    # A float32 accumulation of the same 2M values is visibly off; the stable mean is not.
    naive = (torch.cat(values) * torch.cat(weights)).sum() / torch.cat(weights).sum()
    assert abs(naive.item() - reference.item()) > abs(metric.compute().item() - reference.item())


def test_stable_mean_scalar_weight_forward_and_reset():
    metric = StableMean()
    assert metric(torch.tensor([1.0, 2.0, 3.0])).item() == pytest.approx(2.0)  # the batch's mean
    assert metric(torch.tensor([10.0]), weight=3.0).item() == pytest.approx(10.0)
    assert metric.compute().item() == pytest.approx((1 + 2 + 3 + 30) / 6)
    metric.reset()
    metric.update(torch.tensor([4.0]))
    assert metric.compute().item() == 4.0


def test_stable_mean_rejects_weights_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"weight of shape \(2,\) does not broadcast to values of shape \(3,\)"):
        StableMean().update(torch.ones(3), torch.ones(2))
