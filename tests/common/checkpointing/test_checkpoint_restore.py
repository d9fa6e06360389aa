"""restore(): in-place loading, optimizer state, random generators and clear mismatch errors."""
import logging as std_logging
import random
import re

import numpy as np
import pytest
import torch

from tml.common.checkpointing import (
    CheckpointMismatchError,
    TrainState,
    ensure_optimizer_state,
    load_model_weights,
    restore,
    save_state,
)
from tml.common.checkpointing import train_state as train_state_module
from tml.core.optimizers import DenseGroup, LearningRate, build_combined_optimizer, dense_parameters
from tml.ml_logging.torch_logging import logging as tml_logging


class TwoLayers(torch.nn.Module):
    def __init__(self, hidden: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.first = torch.nn.Linear(4, hidden)
        self.second = torch.nn.Linear(hidden, 1)

    def forward(self, x):
        return self.second(torch.relu(self.first(x))).squeeze(-1)


def _batch(step: int):
    generator = torch.Generator().manual_seed(step)
    return torch.randn(8, 4, generator=generator), torch.randn(8, generator=generator)


def _train(model, optimizer, steps, scheduler=None):
    losses = []
    for step in steps:
        x, y = _batch(step)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(loss.item())
    return losses


def _plain_adam(model):
    return torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=0.01)


def _keyed_adam(model):
    adam = DenseGroup(
        dense_parameters(model), lambda params: torch.optim.Adam(params, lr=0.05, weight_decay=0.01), LearningRate(constant=0.05)
    )
    return build_combined_optimizer(model, {"dense_opt": adam}, {})[0]


@pytest.mark.parametrize("make_optimizer", [_plain_adam, _keyed_adam], ids=["torch", "keyed"])
def test_resumed_training_matches_the_uninterrupted_run(tmp_path, make_optimizer):
    model = TwoLayers()
    optimizer = make_optimizer(model)
    # A chainable schedule: it scales whatever lr the optimizer holds, so that lr must be restored
    # (keyed optimizers do not save their param groups).
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.3)
    _train(model, optimizer, range(3), scheduler)
    save_state(str(tmp_path / "ckpt"), {"model": model, "optimizer": optimizer, "scheduler": scheduler})
    uninterrupted = _train(model, optimizer, range(3, 7), scheduler)

    resumed_model = TwoLayers(seed=1)
    resumed_optimizer = make_optimizer(resumed_model)
    resumed_scheduler = torch.optim.lr_scheduler.StepLR(resumed_optimizer, step_size=2, gamma=0.3)
    restore(
        str(tmp_path / "ckpt"),
        {"model": resumed_model, "optimizer": resumed_optimizer, "scheduler": resumed_scheduler},
    )
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.3)
    assert _train(resumed_model, resumed_optimizer, range(3, 7), resumed_scheduler) == uninterrupted


@pytest.mark.parametrize("optimizer_class", [torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad])
def test_ensure_optimizer_state_creates_state_without_moving_parameters(optimizer_class):
    model = TwoLayers()
    before = {name: param.clone() for name, param in model.named_parameters()}
    optimizer = optimizer_class(model.parameters(), lr=0.1, weight_decay=0.5)
    ensure_optimizer_state(optimizer)
    assert len(optimizer.state) == 4 and all(optimizer.state[param] for param in model.parameters())
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) and param.grad is None
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    save_state(str(tmp_path), {"model": TwoLayers(hidden=3)})
    expected = (
        f"checkpoint {tmp_path} does not fit the state to restore:\n"
        "  tensor 'model.first.weight' has shape (3, 4) in the checkpoint but (5, 4) here\n"
        "  tensor 'model.first.bias' has shape (3,) in the checkpoint but (5,) here\n"
        "  tensor 'model.second.weight' has shape (1, 3) in the checkpoint but (1, 5) here"
    )
    with pytest.raises(CheckpointMismatchError, match=f"^{re.escape(expected)}$"):
        restore(str(tmp_path), {"model": TwoLayers(hidden=5)})


def test_missing_entries_are_named(tmp_path):
    save_state(str(tmp_path), {"model": torch.nn.Linear(4, 3)})
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(CheckpointMismatchError, match=r"'model\.0\.weight' is missing from the checkpoint"):
        restore(str(tmp_path), {"model": model})
    with pytest.raises(CheckpointMismatchError, match=r"'scheduler' is missing from the checkpoint"):
        restore(str(tmp_path), {"scheduler": 5})


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no checkpoint at {re.escape(str(tmp_path))}: its DCP .metadata file is missing"):
        restore(str(tmp_path), {"model": torch.nn.Linear(1, 1)})


def test_subsets_plain_values_and_a_disabled_grad_scaler(tmp_path):
    model = TwoLayers()
    save_state(
        str(tmp_path),
        {"model": model, "scaler": torch.amp.GradScaler("cpu", enabled=False), "config": {"lr": 0.5, "tags": ["a"], "scales": [torch.ones(2), 3]}},
    )
    state = {"config": None, "scaler": torch.amp.GradScaler("cpu", enabled=False)}
    restore(str(tmp_path), state)
    config = state["config"]
    assert config["lr"] == 0.5 and config["tags"] == ["a"] and config["scales"][1] == 3
    assert torch.equal(config["scales"][0], torch.ones(2))
    fresh = TwoLayers(seed=3)
    load_model_weights(fresh, str(tmp_path))
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), model.parameters()))


def _draw():
    return random.random(), float(np.random.rand()), torch.rand(2).tolist()


def test_train_state_restores_progress_and_random_generators(tmp_path):
    train_state = TrainState(step=17, walltime=3.25)
    save_state(str(tmp_path), {"train_state": train_state})
    expected = _draw()
    _draw()
    restored = TrainState()
    restore(str(tmp_path), {"train_state": restored})
    assert (restored.step, restored.walltime, restored.saved_world_size) == (17, 3.25, 1)
    assert _draw() == expected


def test_train_state_can_leave_random_generators_alone(tmp_path):
    save_state(str(tmp_path), {"train_state": TrainState(step=2)})
    _draw()
    restored = TrainState(restore_rng=False)
    before = (random.getstate(), torch.get_rng_state())
    restore(str(tmp_path), {"train_state": restored})
    assert restored.step == 2
    assert random.getstate() == before[0] and torch.equal(torch.get_rng_state(), before[1])


def test_a_rank_missing_from_the_checkpoint_keeps_its_generators(tmp_path, monkeypatch):
    save_state(str(tmp_path), {"train_state": TrainState(step=9)})
    seen = []
    handler = std_logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    tml_logging.logger.addHandler(handler)
    tml_logging.reset_warning_repeats()
    monkeypatch.setattr(train_state_module, "get_rank", lambda: 1)  # as if rank 1 of a bigger run
    monkeypatch.setattr(train_state_module, "get_world_size", lambda: 2)
    try:
        restored = TrainState()
        restore(str(tmp_path), {"train_state": restored})
    finally:
        tml_logging.logger.removeHandler(handler)
    assert restored.step == 9
    assert "random generator states not restored: the checkpoint was saved by 1 ranks, this run has 2" in seen
