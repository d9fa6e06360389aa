"""`runtime.linear_kernel` in the Heavy Ranker: the job builds its model with the configured kernel,
and a small model trained through the step runner learns the same with oneDNN's products as with
torch's (the layers of the small model are below the size threshold, so it is lowered here)."""
from __future__ import annotations

import itertools
import platform
from pathlib import Path

import pytest
import torch
from recap_learnable import HELD_OUT_SEEDS, auroc, learnable_batch, optimizer_config, small_model
from recap_model_builders import TASKS

from tml.common.modules import linear_kernel
from tml.common.modules.linear_kernel import OneDnnLinear, onednn_linear_works, resolve_linear_kernel, use_linear_kernel
from tml.core.train_pipeline import TrainStepRunner
from tml.projects.home.recap.optimizer.optimizer import build_optimizer

STEPS = 60
CPU = torch.device("cpu")
ON_X86 = platform.machine().lower() in {"x86_64", "amd64"}
pytestmark = pytest.mark.skipif(not onednn_linear_works(), reason="this torch build has no oneDNN linear")


def train(kernel: str) -> torch.nn.Module:
    model = small_model()
    use_linear_kernel(model, kernel, CPU)
    optimizer, scheduler = build_optimizer(model, optimizer_config())
    runner = TrainStepRunner(model, optimizer, CPU)
    batches = (learnable_batch(step) for step in itertools.count())
    for _ in range(STEPS):
        runner.step(batches)
        scheduler.step()
    return model


def test_the_small_ranker_learns_the_same_with_onednn_products(monkeypatch):
    monkeypatch.setattr(linear_kernel, "MIN_ONEDNN_WEIGHTS", 1)
    reference = train("torch")
    fast = train("onednn")
    switched = [name for name, module in fast.named_modules() if isinstance(module, OneDnnLinear)]
    assert len(switched) == sum(isinstance(m, torch.nn.Linear) for m in reference.modules()) > 0
    held_out = [learnable_batch(seed) for seed in HELD_OUT_SEEDS]
    for task in range(len(TASKS)):
        expected = auroc(reference, held_out, task)
        assert expected > 0.9, task  # the reference learned the labels' rule
        assert auroc(fast, held_out, task) == pytest.approx(expected, abs=0.005), task
    for (name, a), b in zip(reference.named_parameters(), fast.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=2e-3, msg=name)


@pytest.mark.parametrize("kernel", ["auto", "onednn", "torch"])
def test_the_job_builds_its_model_with_the_runtime_kernel(monkeypatch, caplog, kernel):
    from tml.core.config import load_config_from_yaml
    from tml.projects.home.recap import main
    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.home.recap.data.input_spec import input_spec
    from tml.projects.home.recap.job import build_model_and_optimizer

    monkeypatch.setattr(linear_kernel, "MIN_ONEDNN_WEIGHTS", 1)  # local.yaml's layers are small
    monkeypatch.setattr(linear_kernel, "cpu_vendor", lambda: "AuthenticAMD")  # where auto picks oneDNN
    local_yaml = Path(main.__file__).parent / "config" / "local.yaml"
    overrides = [] if kernel == "auto" else [f"runtime.linear_kernel={kernel}"]  # auto is the default
    config = load_config_from_yaml(RecapConfig, local_yaml, overrides)
    feature_shapes = input_spec(config.train_data, config.model).feature_shapes
    with caplog.at_level("INFO"):
        model, _, _ = build_model_and_optimizer(config, feature_shapes, CPU)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    switched = [m for m in linears if isinstance(m, OneDnnLinear)]
    assert switched == (linears if resolve_linear_kernel(kernel, CPU) == "onednn" else [])
    assert (switched != []) == (kernel == "onednn" or (kernel == "auto" and ON_X86))
    said = f"runtime.linear_kernel={kernel}: {len(switched)} large Linear layers compute with oneDNN's products"
    assert (said in caplog.text) == bool(switched)
