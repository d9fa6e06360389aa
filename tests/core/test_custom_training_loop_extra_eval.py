"""The loop's extra-evaluation hook: metrics computed from the whole model (not per batch) are run
at every evaluation, in eval mode without gradients, and logged like the dataset metrics."""
import os

import torch
import torchmetrics

from tml.core import custom_training_loop as loop
from tml.core.metrics import AUROCWithMWU
from tml.core.metrics.mixins import MetricMixin

from loop_model import StreamDataset, build_trainable


class LoopAUROC(MetricMixin, AUROCWithMWU):
    def transform(self, outputs):
        return {"predictions": outputs["probabilities"][:, 0], "target": outputs["labels"][:, 0]}


def auroc_collection(_name: str = "") -> torchmetrics.MetricCollection:
    return torchmetrics.MetricCollection({"auroc": LoopAUROC()})


class WeightNorm:
    """An extra evaluation that records how the loop called it."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, model, step):
        first_weight = next(p for name, p in model.named_parameters() if "mlp" in name)
        self.calls.append((step, model.training, torch.is_grad_enabled()))
        return {"mlp_norm": first_weight.norm(), "step_seen": step}


def test_extra_evaluations_run_at_each_evaluation_and_are_logged(process_group, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, optimizer = build_trainable()
    joined, alone = WeightNorm(), WeightNorm()
    result = loop.train_and_evaluate(
        model, optimizer, torch.device("cpu"), str(tmp_path), logging_interval=5, train_steps=12,
        checkpoint_frequency=5, dataset=StreamDataset(batch_size=16), worker_batch_size=16,
        eval_datasets={"heldout": StreamDataset(batch_size=64, num_batches=2, seed=7)},
        eval_metrics_factory=auroc_collection, num_eval_steps=-1,
        extra_evaluations={"heldout": joined, "tables": alone},
    )
    assert joined.calls == alone.calls == [(5, False, False), (10, False, False), (12, False, False)]

    final_norm = next(p for name, p in model.named_parameters() if "mlp" in name).norm().item()
    assert set(result.eval_results) == {"heldout", "tables"}
    assert set(result.eval_results["heldout"]) == {"auroc", "mlp_norm", "step_seen"}
    assert result.eval_results["tables"] == {"mlp_norm": final_norm, "step_seen": 12.0}

    heldout = EventAccumulator(os.path.join(tmp_path, "tensorboard", "eval_heldout")).Reload()
    assert [e.step for e in heldout.Scalars("auroc")] == [5, 10, 12]
    assert [e.value for e in heldout.Scalars("step_seen")] == [5.0, 10.0, 12.0]
    tables = EventAccumulator(os.path.join(tmp_path, "tensorboard", "eval_tables")).Reload()
    assert tables.Tags()["scalars"] == ["mlp_norm", "step_seen"]
    assert tables.Scalars("mlp_norm")[-1].value == torch.tensor(final_norm).item()
