import pytest
import torch

from tml.core.metrics.auroc import AUROCWithMWU
from tml.core.metrics.ranking import Auc, HitAtK, PosRanks, ReciprocalRank, positive_ranks

# Sorted by descending score: .9 (neg), .7 (neg), .5 (pos), .3 (pos), .1 (pos) -> positive ranks 3, 4, 5.
BATCH = {"logits": torch.tensor([0.9, 0.1, 0.5, 0.7, 0.3]), "labels": torch.tensor([0, 1, 1, 0, 1])}
SECOND_BATCH = {"logits": torch.tensor([[0.2], [0.8]]), "labels": torch.tensor([[1], [0]])}  # positive rank 2


def _compute(metric, *batches):
    for batch in batches:
        metric.update(batch)
    return metric.compute().item()


def test_positive_ranks():
    assert positive_ranks(BATCH["logits"], BATCH["labels"]).tolist() == [3, 4, 5]


def test_pos_ranks_reciprocal_rank_and_hit_at_k():
    assert _compute(PosRanks(), BATCH) == pytest.approx(4.0)
    assert _compute(ReciprocalRank(), BATCH) == pytest.approx((1 / 3 + 1 / 4 + 1 / 5) / 3)
    assert _compute(HitAtK(3), BATCH) == pytest.approx(1 / 3)
    assert _compute(HitAtK(4), BATCH) == pytest.approx(2 / 3)


def test_ranking_metrics_average_over_all_positives_of_all_batches():
    assert _compute(PosRanks(), BATCH, SECOND_BATCH) == pytest.approx((3 + 4 + 5 + 2) / 4)
    assert _compute(ReciprocalRank(), BATCH, SECOND_BATCH) == pytest.approx((1 / 3 + 1 / 4 + 1 / 5 + 1 / 2) / 4)
    assert _compute(HitAtK(2), BATCH, SECOND_BATCH) == pytest.approx(1 / 4)


def test_sampled_auc_extremes_and_ties():
    generator = torch.Generator().manual_seed(0)
    separated = {"logits": torch.tensor([3.0, 2.0, 1.0, 0.0]), "labels": torch.tensor([1, 1, 0, 0])}
    assert _compute(Auc(50, generator=generator), separated) == 1.0
    reversed_ = dict(separated, labels=torch.tensor([0, 0, 1, 1]))
    assert _compute(Auc(50, generator=generator), reversed_) == 0.0
    tied = {"logits": torch.zeros(4), "labels": torch.tensor([1, 0, 1, 0])}
    assert _compute(Auc(50, generator=generator), tied) == 0.5


def test_sampled_auc_approaches_the_exact_auc():
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(400, generator=generator)
    labels = (torch.rand(400, generator=generator) < torch.sigmoid(2 * scores)).long()
    exact = AUROCWithMWU()
    exact.update(scores, labels.float())
    sampled = _compute(Auc(200_000, generator=generator), {"logits": scores, "labels": labels})
    assert sampled == pytest.approx(exact.compute().item(), abs=0.01)


def test_sampled_auc_skips_batches_without_both_classes():
    metric = Auc(10)
    metric.update({"logits": torch.tensor([0.3, 0.4]), "labels": torch.tensor([1, 1])})
    metric.update({"logits": torch.tensor([0.9, 0.1]), "labels": torch.tensor([1, 0])})
    assert metric.compute().item() == 1.0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_samples must be positive, got 0"):
        Auc(0)
    with pytest.raises(ValueError, match="k must be positive, got 0"):
        HitAtK(0)
    with pytest.raises(ValueError, match=r"logits \(3 values\) and labels \(2\) differ in size"):
        PosRanks().update({"logits": torch.zeros(3), "labels": torch.zeros(2)})
