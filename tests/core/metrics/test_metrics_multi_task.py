import pytest
import torch

from tml.core.metrics.auroc import AUROCWithMWU
from tml.core.metrics.mixins import Stratifier
from tml.core.metrics.multi_task import get_multi_task_metrics
from tml.core.metrics.rce import NRCE, RCE

TASKS = ["recap.engagement.is_favorited", "recap.engagement.is_replied"]
METRIC_NAMES = ("auroc", "calibration", "count", "ctr", "nrce", "pctr", "rce")


def _outputs(batch_size=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch_size, 2, generator=generator)
    probabilities = torch.sigmoid(logits)
    return {
        "logits": logits,
        "probabilities": probabilities,
        "calibrated_probabilities": probabilities * 0.5,
        "labels": (torch.rand(batch_size, 2, generator=generator) < probabilities).float(),
        "weights": torch.rand(batch_size, 2, generator=generator) + 0.5,
        "task_names": list(TASKS),
    }


def _reference(outputs, column):
    probabilities, labels, weights = (outputs[key][:, column] for key in ("probabilities", "labels", "weights"))
    values = {}
    for name, metric in (("auroc", AUROCWithMWU()), ("rce", RCE()), ("nrce", NRCE())):
        metric.update(probabilities, labels, weights)
        values[name] = metric.compute().item()
    values["ctr"] = ((labels * weights).sum() / weights.sum()).item()
    values["pctr"] = ((probabilities * weights).sum() / weights.sum()).item()
    values["count"] = labels.sum().item()
    values["calibration"] = ((outputs["calibrated_probabilities"][:, column] * weights).sum()
                             / (labels * weights).sum()).item()
    return values


def test_keys_are_metric_slash_task_with_dotted_task_names():
    metrics = get_multi_task_metrics(TASKS)
    expected = {f"{metric}/{task}" for metric in METRIC_NAMES for task in TASKS}
    assert set(metrics.keys()) == expected
    assert "auroc/recap.engagement.is_replied" in metrics
    assert type(metrics["rce/recap.engagement.is_favorited"]).__name__ == "TaskRCE"


def test_values_equal_the_single_metrics_per_task():
    outputs = _outputs()
    metrics = get_multi_task_metrics(TASKS)
    metrics.update(outputs)
    results = metrics.compute()
    assert set(results) == set(metrics.keys())
    for column, task in enumerate(TASKS):
        for name, expected in _reference(outputs, column).items():
            assert results[f"{name}/{task}"].item() == pytest.approx(expected, rel=1e-5), (name, task)


def test_columns_are_found_by_name_when_outputs_are_in_another_order():
    outputs = _outputs()
    swapped = {key: (value.flip(1) if torch.is_tensor(value) else value) for key, value in outputs.items()}
    swapped["task_names"] = TASKS[::-1]
    in_order, out_of_order = get_multi_task_metrics(TASKS), get_multi_task_metrics(TASKS)
    in_order.update(outputs)
    out_of_order.update(swapped)
    expected, actual = in_order.compute(), out_of_order.compute()
    for key, value in expected.items():
        assert actual[key].item() == pytest.approx(value.item(), rel=1e-12), key


def test_forward_prefix_unweighted_and_stratified():
    outputs = _outputs()
    outputs["stratifiers"] = {"surface": torch.arange(64) % 2}
    metrics = get_multi_task_metrics(TASKS, weighted=False, prefix="eval_", stratifier=Stratifier("surface", 1))
    batch = metrics(outputs)
    task = TASKS[0]
    kept = outputs["labels"][1::2, 0]
    assert batch[f"eval_ctr/{task}"].item() == pytest.approx(kept.mean().item())
    assert batch[f"eval_count/{task}"].item() == kept.sum().item()


def test_duplicate_task_names_are_rejected():
    with pytest.raises(ValueError, match=r"task_names must be unique, got \['a', 'a'\]"):
        get_multi_task_metrics(["a", "a"])
