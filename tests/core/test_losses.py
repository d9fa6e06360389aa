import itertools
import math

import pytest
import torch

from tml.common.testing_utils import run_on_ranks
from tml.core.loss_type import LossType
from tml.core.losses import build_loss, build_multi_task_loss, get_global_loss_detached

from rank_fns_metrics import global_loss_rank

LN2 = math.log(2.0)
TASKS = ["a", "b", "c"]
# All logits 0, so every element's BCE is ln2 times (pos_weight if positive) times its weight:
#   a: labels [1, 0], weights [1, 3], pos_weight 2 -> mean(2 ln2, 3 ln2) = 2.5 ln2
#   b: labels [1, 1], weights [.5, .5]            -> 0.5 ln2
#   c: labels [0, 0], weights [1, 1]              -> 1.0 ln2
LOGITS = torch.zeros(2, 3)
LABELS = {"a": torch.tensor([1, 0]), "b": torch.tensor([1, 1]), "c": torch.tensor([0, 0])}
WEIGHTS = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([0.5, 0.5]), "c": torch.tensor([1.0, 1.0])}
POS_WEIGHTS = [2.0, 1.0, 1.0]
EXPECTED_TASK_LOSSES = {"a": 2.5 * LN2, "b": 0.5 * LN2, "c": 1.0 * LN2}


def _as_columns(values: dict, names: list) -> torch.Tensor:
    return torch.stack([values[name].float() for name in names], dim=1)


def test_loss_type_values_match_the_original():
    assert LossType("bce_with_logits") is LossType.BCE_WITH_LOGITS
    assert LossType.CROSS_ENTROPY.value == "cross_entropy"


def test_build_loss_bce_casts_integer_labels():
    loss_fn = build_loss(LossType.BCE_WITH_LOGITS)
    loss = loss_fn(torch.tensor([0.0, math.log(3.0)]), torch.tensor([1, 0]))
    # sigmoid(ln 3) = 0.75: mean(-ln 0.5, -ln 0.25) = 1.5 ln2
    assert loss.item() == pytest.approx(1.5 * LN2)
    summed = build_loss("bce_with_logits", reduction="sum")(torch.tensor([0.0, 0.0]), torch.tensor([1, 0]))
    assert summed.item() == pytest.approx(2 * LN2)


def test_build_loss_rejects_unsupported_and_unknown_types():
    with pytest.raises(ValueError, match="loss_type 'cross_entropy' is not supported; supported: bce_with_logits"):
        build_loss(LossType.CROSS_ENTROPY)
    with pytest.raises(ValueError, match="Unknown loss_type 'hinge'"):
        build_loss("hinge")


def test_multi_task_loss_hand_computed_per_task_and_mean():
    loss_fn = build_multi_task_loss(LossType.BCE_WITH_LOGITS, TASKS, pos_weights=POS_WEIGHTS)
    losses = loss_fn(LOGITS, LABELS, WEIGHTS)
    assert set(losses) == {"loss/a", "loss/b", "loss/c", "loss"}
    for task, expected in EXPECTED_TASK_LOSSES.items():
        assert losses[f"loss/{task}"].item() == pytest.approx(expected)
    assert losses["loss"].item() == pytest.approx(4.0 / 3.0 * LN2)


@pytest.mark.parametrize(
    "reduction, expected",
    [("mean", 4.0 / 3.0), ("sum", 4.0), ("min", 0.5), ("max", 2.5), ("median", 1.0)],
)
def test_multi_task_loss_global_reductions(reduction, expected):
    loss_fn = build_multi_task_loss("bce_with_logits", TASKS, global_reduction=reduction, pos_weights=POS_WEIGHTS)
    assert loss_fn(LOGITS, LABELS, WEIGHTS)["loss"].item() == pytest.approx(expected * LN2)


def test_multi_task_loss_sum_task_reduction():
    loss_fn = build_multi_task_loss("bce_with_logits", TASKS, task_loss_reduction="sum", pos_weights=POS_WEIGHTS)
    losses = loss_fn(LOGITS, LABELS, WEIGHTS)
    assert losses["loss/a"].item() == pytest.approx(5.0 * LN2)  # sum, not mean, of 2 ln2 and 3 ln2


def test_multi_task_loss_without_weights_is_plain_bce():
    loss_fn = build_multi_task_loss("bce_with_logits", ["a"])
    losses = loss_fn(torch.tensor([[0.0], [math.log(3.0)]]), {"a": torch.tensor([1, 0])})
    assert losses["loss"].item() == pytest.approx(1.5 * LN2)


def test_multi_task_loss_picks_columns_by_name_in_any_column_order():
    loss_fn = build_multi_task_loss("bce_with_logits", TASKS, pos_weights=POS_WEIGHTS)
    # The data carries an extra label (like the 13 data labels vs 10 model towers of the original).
    labels = dict(LABELS, extra=torch.tensor([1, 1]))
    weights = dict(WEIGHTS, extra=torch.tensor([9.0, 9.0]))
    expected = 4.0 / 3.0 * LN2
    for order in itertools.permutations(["a", "b", "c", "extra"]):
        names = list(order)
        losses = loss_fn(LOGITS, _as_columns(labels, names), _as_columns(weights, names), label_names=names)
        assert losses["loss"].item() == pytest.approx(expected), names
        assert losses["loss/a"].item() == pytest.approx(2.5 * LN2), names


def test_multi_task_loss_label_names_given_to_the_builder():
    names = ["extra", "c", "a", "b"]
    loss_fn = build_multi_task_loss("bce_with_logits", TASKS, pos_weights=POS_WEIGHTS, label_names=names)
    labels = _as_columns(dict(LABELS, extra=torch.tensor([1, 1])), names)
    weights = _as_columns(dict(WEIGHTS, extra=torch.tensor([1.0, 1.0])), names)
    assert loss_fn(LOGITS, labels, weights)["loss"].item() == pytest.approx(4.0 / 3.0 * LN2)


def test_positional_indexing_would_have_misaligned_the_labels():
    """The original's bug B1: column i of the data is not model task i."""
    names = ["c", "a", "b"]
    labels, weights = _as_columns(LABELS, names), _as_columns(WEIGHTS, names)
    by_name = build_multi_task_loss("bce_with_logits", TASKS, pos_weights=POS_WEIGHTS)(
        LOGITS, labels, weights, label_names=names)
    positional = build_multi_task_loss("bce_with_logits", TASKS, pos_weights=POS_WEIGHTS)(LOGITS, labels, weights)
    assert by_name["loss/a"].item() == pytest.approx(2.5 * LN2)
    assert positional["loss/a"].item() != pytest.approx(2.5 * LN2)


def test_multi_task_loss_missing_task_names_the_task_and_the_available_labels():
    loss_fn = build_multi_task_loss("bce_with_logits", TASKS)
    with pytest.raises(ValueError, match=r"Model task 'c' not found in labels; available: \['a', 'b'\]"):
        loss_fn(LOGITS, torch.zeros(2, 2), label_names=["a", "b"])
    with pytest.raises(ValueError, match=r"Model task 'b' not found in labels; available: \['a', 'c'\]"):
        loss_fn(LOGITS, {"a": torch.zeros(2), "c": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"Model task 'c' not found in weights; available: \['a', 'b'\]"):
        loss_fn(LOGITS, LABELS, {"a": torch.ones(2), "b": torch.ones(2)})


def test_multi_task_loss_shape_and_name_errors():
    loss_fn = build_multi_task_loss("bce_with_logits", TASKS)
    with pytest.raises(ValueError, match="labels has 4 columns but the model has 3 tasks; pass label_names"):
        loss_fn(LOGITS, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="label_names has 2 entries but labels has 3 columns"):
        loss_fn(LOGITS, torch.zeros(2, 3), label_names=["a", "b"])
    with pytest.raises(ValueError, match="label_names contains 'a' twice"):
        loss_fn(LOGITS, torch.zeros(2, 3), label_names=["a", "a", "b"])
    with pytest.raises(ValueError, match=r"logits must have shape \[batch, 3\]"):
        loss_fn(torch.zeros(2, 2), LABELS)


def test_build_multi_task_loss_validates_its_arguments():
    with pytest.raises(ValueError, match="global_reduction must be one of"):
        build_multi_task_loss("bce_with_logits", TASKS, global_reduction="avg")
    with pytest.raises(ValueError, match="task_loss_reduction must be one of"):
        build_multi_task_loss("bce_with_logits", TASKS, task_loss_reduction="none")
    with pytest.raises(ValueError, match="pos_weights has 2 entries for 3 tasks"):
        build_multi_task_loss("bce_with_logits", TASKS, pos_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="supports only loss_type 'bce_with_logits', got 'cross_entropy'"):
        build_multi_task_loss("cross_entropy", TASKS)


def test_multi_task_loss_backpropagates_to_each_task_logit():
    logits = torch.zeros(2, 3, requires_grad=True)
    build_multi_task_loss("bce_with_logits", TASKS)(logits, LABELS)["loss"].backward()
    # d/dx BCE at x=0 is sigmoid(0) - y = 0.5 - y, averaged over batch (1/2) and tasks (1/3).
    expected = (0.5 - _as_columns(LABELS, TASKS)) / 6.0
    torch.testing.assert_close(logits.grad, expected)


def test_global_loss_without_process_group_is_the_detached_local_value():
    local = torch.tensor(2.5, requires_grad=True) * 1.0
    global_loss = get_global_loss_detached(local)
    assert global_loss.item() == 2.5 and not global_loss.requires_grad


def test_global_loss_in_a_world_of_one(process_group):
    assert get_global_loss_detached(torch.tensor(3.0)).item() == 3.0
    assert get_global_loss_detached(torch.tensor(3.0), reduction="sum").item() == 3.0
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        get_global_loss_detached(torch.tensor(3.0), reduction="max")


@pytest.mark.slow
def test_global_loss_averages_and_sums_over_two_ranks():
    # Rank r holds loss r + 1: mean 1.5, sum 3 on every rank; the local tensor is not modified.
    assert run_on_ranks(global_loss_rank, 2, timeout_s=60) == [(1.5, 3.0, 1.0), (1.5, 3.0, 2.0)]
