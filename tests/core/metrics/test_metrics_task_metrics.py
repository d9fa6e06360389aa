import pytest
import torch

from tml.core.metrics.mixins import Stratifier
from tml.core.metrics.task_metrics import (
    Calibration,
    Count,
    Ctr,
    Pctr,
    Precision,
    Recall,
    TaskAUROCWithMWU,
    TaskNRCE,
    TaskRCE,
    TorchMetricsRocauc,
    probs_and_labels,
)
from tml.core.metrics.rce import NRCE, RCE

# Task "fav" (column 0): probabilities .9 .6 .3 .2, labels 1 0 1 0, weights 1 1 2 4.
OUTPUTS = {
    "probabilities": torch.tensor([[0.9, 0.1], [0.6, 0.2], [0.3, 0.7], [0.2, 0.4]]),
    "calibrated_probabilities": torch.tensor([[0.5, 0.1], [0.3, 0.2], [0.2, 0.7], [0.1, 0.4]]),
    "labels": torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]]),
    "weights": torch.tensor([[1.0, 1.0], [1.0, 1.0], [2.0, 1.0], [4.0, 1.0]]),
    "task_names": ["fav", "reply"],
    "stratifiers": {"surface": torch.tensor([1, 1, 0, 1])},
}


def _compute(metric, outputs=OUTPUTS):
    metric.update(outputs)
    return metric.compute().item()


def test_count_is_the_number_of_positives():
    assert _compute(Count(task="fav")) == 2.0
    assert _compute(Count(task="fav", weighted=True)) == 3.0  # 1 + 2
    assert _compute(Count(task="reply", stratifier=Stratifier("surface", 1))) == 1.0


def test_ctr_and_pctr_unweighted_and_weighted():
    assert _compute(Ctr(task="fav")) == pytest.approx(0.5)
    assert _compute(Ctr(task="fav", weighted=True)) == pytest.approx(3 / 8)
    assert _compute(Pctr(task="fav")) == pytest.approx(0.5)
    assert _compute(Pctr(task="fav", weighted=True)) == pytest.approx((0.9 + 0.6 + 0.6 + 0.8) / 8)


def test_precision_recall_and_torchmetrics_auroc():
    # Predicted positive at 0.5: rows 0 and 1 -> one true positive of two predictions; of two positives.
    assert _compute(Precision(task="fav")) == pytest.approx(0.5)
    assert _compute(Recall(task="fav")) == pytest.approx(0.5)
    # Pairs (pos, neg): .9>.6, .9>.2, .3<.6, .3>.2 -> 3 / 4.
    assert _compute(TorchMetricsRocauc(task="fav")) == pytest.approx(0.75)


def test_weighted_mwu_auroc_for_a_task():
    # Same pairs weighted by w_pos * w_neg: (1*1 + 1*4 + 0 + 2*4) / ((1+2) * (1+4)) = 13/15.
    assert _compute(TaskAUROCWithMWU(task="fav")) == pytest.approx(13 / 15)
    assert _compute(TaskAUROCWithMWU(task="fav", weighted=False)) == pytest.approx(0.75)


def test_task_rce_and_nrce_match_the_tensor_metrics_on_the_column():
    column = {"predictions": OUTPUTS["probabilities"][:, 1], "target": OUTPUTS["labels"][:, 1],
              "weight": OUTPUTS["weights"][:, 1]}
    for task_metric, plain in ((TaskRCE(task="reply"), RCE()), (TaskNRCE(task="reply"), NRCE())):
        plain.update(**column)
        assert _compute(task_metric) == pytest.approx(plain.compute().item(), rel=1e-12)


def test_task_rce_from_logits_reads_logits():
    logits = torch.logit(OUTPUTS["probabilities"])
    from_logits = _compute(TaskRCE(task="fav", from_logits=True), dict(OUTPUTS, logits=logits))
    assert from_logits == pytest.approx(_compute(TaskRCE(task="fav")), rel=1e-5)


def test_calibration_prefers_calibrated_probabilities():
    # Weighted calibrated prediction (0.5 + 0.3 + 0.4 + 0.4) / weighted positives 3.
    assert _compute(Calibration(task="fav")) == pytest.approx(1.6 / 3)
    uncalibrated = {k: v for k, v in OUTPUTS.items() if k != "calibrated_probabilities"}
    assert _compute(Calibration(task="fav"), uncalibrated) == pytest.approx(2.9 / 3)


def test_probs_and_labels_helper():
    selected = probs_and_labels(OUTPUTS, 1)
    torch.testing.assert_close(selected["preds"], torch.tensor([0.1, 0.2, 0.7, 0.4]))
    assert selected["target"].dtype == torch.int32
    assert probs_and_labels(OUTPUTS, -1)["preds"].shape == (4, 2)
