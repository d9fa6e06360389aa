"""Rank functions for the checkpoint tests: train and save on 2 ranks, restore under other plans."""
from __future__ import annotations

from typing import Any

import torch

from tml.common.checkpointing import CheckpointManager, CheckpointMismatchError, TrainState, restore
from tiny_recsys import (
    build_sharded,
    eval_outputs,
    model_checksums,
    optimizer_checksums,
    train_steps,
)

SAVE_AT = 4
CONTINUE_FOR = 3
EVAL_SEEDS = [7, 8]


def _state(model: Any, optimizer: Any, scaler: Any, train_state: TrainState, note: Any) -> dict[str, Any]:
    return {"model": model, "optimizer": optimizer, "scaler": scaler, "train_state": train_state, "note": note}


def _later_steps() -> range:
    return range(SAVE_AT + 1, SAVE_AT + 1 + CONTINUE_FOR)


def save_then_continue(rank: int, world_size: int, save_dir: str) -> dict[str, Any]:
    """2 ranks, table_wise: train SAVE_AT steps, checkpoint, then keep training (the uninterrupted run)."""
    model, optimizer = build_sharded("table_wise", seed=0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    train_state = TrainState()
    train_steps(model, optimizer, range(1, SAVE_AT + 1), rank)
    train_state.step, train_state.walltime = SAVE_AT, 12.5
    torch.manual_seed(100 + rank)
    path = CheckpointManager(save_dir).save(SAVE_AT, _state(model, optimizer, scaler, train_state, "hello"))
    return {
        "path": path,
        "random_after_save": torch.rand(3),
        "outputs": eval_outputs(model, EVAL_SEEDS),
        "model_sums": model_checksums(model.state_dict()),
        "optimizer_sums": optimizer_checksums(optimizer),
        "later_losses": train_steps(model, optimizer, _later_steps(), rank),
    }


def restore_and_continue(rank: int, world_size: int, checkpoint: str, sharding_type: str) -> dict[str, Any]:
    """Restore into a differently seeded model under `sharding_type`, then train on."""
    model, optimizer = build_sharded(sharding_type, seed=123)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0)
    train_state = TrainState()
    state = _state(model, optimizer, scaler, train_state, None)
    restore(checkpoint, state)
    return {
        "random_after_restore": torch.rand(3),
        "step": train_state.step,
        "walltime": train_state.walltime,
        "saved_world_size": train_state.saved_world_size,
        "scale": scaler.get_scale(),
        "note": state["note"],
        "outputs": eval_outputs(model, EVAL_SEEDS),
        "model_sums": model_checksums(model.state_dict()),
        "optimizer_sums": optimizer_checksums(optimizer),
        "later_losses": train_steps(model, optimizer, _later_steps(), rank),
    }


def restore_into_bigger_tables(rank: int, world_size: int, checkpoint: str) -> str:
    """Every rank must raise the same clear error (none may hang waiting in the load)."""
    model, optimizer = build_sharded("row_wise", num_rows=20)
    try:
        restore(checkpoint, {"model": model, "optimizer": optimizer})
    except CheckpointMismatchError as error:
        return str(error)
    return "no error"


def async_save_while_training(rank: int, world_size: int, save_dir: str) -> dict[str, Any]:
    """2 ranks: save asynchronously, keep training (sharded lookups and gradient all-reduce run on
    the default group while the writer thread uses its own), then publish and restore."""
    model, optimizer = build_sharded("table_wise", seed=0)
    train_steps(model, optimizer, range(1, SAVE_AT + 1), rank)
    manager = CheckpointManager(save_dir, async_save=True)
    saved = model_checksums(model.state_dict())
    path = manager.save(SAVE_AT, {"model": model, "optimizer": optimizer})
    published_before_wait = manager.latest()
    train_steps(model, optimizer, _later_steps(), rank)
    manager.wait()
    fresh, fresh_optimizer = build_sharded("table_wise", seed=123)
    restore(path, {"model": fresh, "optimizer": fresh_optimizer})
    return {
        "path": path,
        "published_before_wait": published_before_wait,
        "latest": manager.latest(),
        "saved": saved,
        "restored": model_checksums(fresh.state_dict()),
        "trained_on": model_checksums(model.state_dict()),
    }
