"""bf16 autocast trains the Heavy Ranker as well as fp32: a small model trained and evaluated through
the training loop's step runner and evaluation, each way, reaches AUROCs within 0.01."""
from __future__ import annotations

import itertools

import pytest
import torch
from recap_learnable import HELD_OUT_SEEDS, learnable_batch, optimizer_config, small_model
from recap_model_builders import TASKS
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAUROC

from tml.core import custom_training_loop as ctl
from tml.core.train_pipeline import TrainStepRunner
from tml.projects.home.recap.optimizer.optimizer import build_optimizer

STEPS = 60
CPU = torch.device("cpu")


class TaskAuroc(BinaryAUROC):
    """AUROC of one task column of the model's outputs."""

    def __init__(self, task: int) -> None:
        super().__init__()
        self.task = task

    def update(self, outputs: dict) -> None:  # type: ignore[override]
        super().update(outputs["probabilities"][:, self.task].float(), outputs["labels"][:, self.task].long())


def train_and_evaluate(enable_amp: bool) -> dict[str, float]:
    model = small_model()
    optimizer, scheduler = build_optimizer(model, optimizer_config())
    runner = TrainStepRunner(model, optimizer, CPU, enable_amp=enable_amp)
    torch.manual_seed(1)
    batches = (learnable_batch(step) for step in itertools.count())
    for _ in range(STEPS):
        runner.step(batches)
        scheduler.step()
    metrics = MetricCollection({f"auroc_{task}": TaskAuroc(task) for task in range(len(TASKS))})
    held_out = [learnable_batch(seed) for seed in HELD_OUT_SEEDS]
    return ctl.evaluate(runner.detach(), held_out, metrics, CPU, num_eval_steps=-1, enable_amp=enable_amp)


def test_bf16_autocast_reaches_the_fp32_auroc():
    fp32 = train_and_evaluate(enable_amp=False)
    bf16 = train_and_evaluate(enable_amp=True)
    for name, value in fp32.items():
        assert value > 0.9, (name, value)  # the fp32 model learned the labels' rule
        assert bf16[name] == pytest.approx(value, abs=0.01), name
    assert bf16 != fp32  # the bf16 run really computed in bf16


def test_the_step_runs_its_products_in_bf16_under_amp():
    model = small_model()
    optimizer, _ = build_optimizer(model, optimizer_config())
    dtypes = []
    hook = model.model.towers[next(iter(model.model.towers))].register_forward_hook(
        lambda module, inputs, output: dtypes.append(output["output"].dtype)
    )
    TrainStepRunner(model, optimizer, CPU, enable_amp=True).step(iter([learnable_batch(0)]))
    hook.remove()
    assert dtypes == [torch.bfloat16]


def test_the_entry_point_warns_about_bf16_on_a_cpu_without_it(monkeypatch, caplog):
    from pathlib import Path

    from tml.core import precision
    from tml.core.config import load_config_from_yaml
    from tml.common.entry_point import configure_runtime
    from tml.projects.home.recap import main
    from tml.projects.home.recap.config import RecapConfig

    local_yaml = Path(main.__file__).parent / "config" / "local.yaml"
    config = load_config_from_yaml(RecapConfig, local_yaml, ["runtime.enable_amp=true"])
    emulated = precision.CpuBf16Support("Old CPU", (), "AVX2", False, False)
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: emulated)
    monkeypatch.setattr(precision, "measure_bf16_slowdown", lambda: 101.0)
    with caplog.at_level("WARNING"):
        configure_runtime(config.runtime, CPU)
    assert "this CPU (Old CPU) has no native bf16" in caplog.text and "101x slower" in caplog.text
