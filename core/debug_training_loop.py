"""A plain loop for debugging a model: no pipeline, no checkpoints, the loss of every step logged.

Selected by `--debug_loop` in the entry points. Runs exactly `train_steps` steps.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch

from tml.ml_logging.torch_logging import logging


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_steps: int,
    dataset: Iterable[Any],
    scheduler: Optional[Any] = None,
    device: Optional[torch.device] = None,
    *args: Any,
    **kwargs: Any,
) -> list[float]:
    """Returns the per-step losses. Extra arguments of the full loop are accepted and ignored."""
    model.train()
    losses: list[float] = []
    batches = iter(dataset)
    for step in range(1, train_steps + 1):
        batch = next(batches, None)
        if batch is None:
            logging.warning(f"the training data ended after {step - 1} steps (asked for {train_steps})")
            break
        if device is not None:
            batch = batch.to(device)
        optimizer.zero_grad()
        loss, _ = model(batch)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        losses.append(float(loss.detach()))
        logging.info(f"step {step}/{train_steps} loss={losses[-1]:.6g}")
    return losses
