import pytest
import torch
import torchmetrics

from tml.core.metrics.mixins import MetricMixin, Stratifier, StratifyMixin, TaskMixin, prepend_transform


class MeanOfTaskLabels(StratifyMixin, TaskMixin, MetricMixin, torchmetrics.MeanMetric):
    def transform(self, outputs):
        outputs = self.maybe_apply_stratification(outputs, ["labels"])
        return {"value": self.task_column(outputs, "labels")}


OUTPUTS = {
    "labels": torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 0.0]]),
    "task_names": ["fav", "reply"],
    "stratifiers": {"surface": torch.tensor([0, 1, 1, 0])},
}


def _compute(metric, outputs=OUTPUTS):
    metric.update(outputs)
    return metric.compute().item()


def test_task_by_index_by_name_and_whole_tensor():
    assert _compute(MeanOfTaskLabels(task_idx=0)) == pytest.approx(0.75)
    assert _compute(MeanOfTaskLabels(task="reply")) == pytest.approx(0.25)
    assert _compute(MeanOfTaskLabels()) == pytest.approx(4 / 8)  # no task: every column


def test_task_name_wins_over_index_when_outputs_carry_names():
    reordered = dict(OUTPUTS, labels=OUTPUTS["labels"].flip(1), task_names=["reply", "fav"])
    assert _compute(MeanOfTaskLabels(task="fav", task_idx=0), reordered) == pytest.approx(0.75)
    without_names = {"labels": OUTPUTS["labels"]}
    assert _compute(MeanOfTaskLabels(task="reply", task_idx=1), without_names) == pytest.approx(0.25)


def test_unknown_task_name_and_missing_names_are_errors():
    with pytest.raises(ValueError, match=r"Metric task 'share' is not in outputs\['task_names'\]: \['fav', 'reply'\]"):
        MeanOfTaskLabels(task="share").update(OUTPUTS)
    with pytest.raises(ValueError, match=r"Metric for task 'fav' needs outputs\['task_names'\]"):
        MeanOfTaskLabels(task="fav").update({"labels": OUTPUTS["labels"]})
    with pytest.raises(ValueError, match=r"has no task column 5"):
        MeanOfTaskLabels(task_idx=5).update(OUTPUTS)


def test_stratification_keeps_the_matching_rows():
    assert _compute(MeanOfTaskLabels(task="reply", stratifier=Stratifier("surface", 1))) == pytest.approx(0.5)
    assert _compute(MeanOfTaskLabels(task="fav", stratifier=Stratifier("surface", 0))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"Stratifier 'country' is not in outputs\['stratifiers'\] \(available: \['surface'\]\)"):
        MeanOfTaskLabels(stratifier=Stratifier("country", 1)).update(OUTPUTS)


def test_default_stratification_filters_every_batch_sized_tensor():
    metric = MeanOfTaskLabels(stratifier=Stratifier("surface", 0))
    filtered = metric.maybe_apply_stratification(dict(OUTPUTS, extra=torch.arange(4), scalar=torch.tensor(1.0)))
    torch.testing.assert_close(filtered["extra"], torch.tensor([0, 3]))
    assert filtered["task_names"] == ["fav", "reply"] and filtered["scalar"].item() == 1.0


def test_update_skips_batches_that_stratification_empties():
    metric = MeanOfTaskLabels(task="fav", stratifier=Stratifier("surface", 7))
    metric.update(OUTPUTS)  # no row in stratum 7: skipped, not an error
    metric.update(dict(OUTPUTS, stratifiers={"surface": torch.tensor([7, 7, 0, 0])}))
    assert metric.compute().item() == pytest.approx(0.5)


def test_prepend_transform_builds_an_outputs_metric():
    SumOfScores = prepend_transform(torchmetrics.SumMetric, lambda outputs: {"value": outputs["scores"] * 2})
    metric = SumOfScores()
    assert SumOfScores.__name__ == "SumMetric" and isinstance(metric, torchmetrics.SumMetric)
    metric.update({"scores": torch.tensor([1.0, 2.0])})
    metric.update({"scores": torch.tensor([])})  # empty: skipped
    assert metric.compute().item() == 6.0
