"""The one walk over an optimizer tree: torchrec's `CombinedOptimizer`s and `OptimizerWrapper`s
nest other optimizers; everything that needs the optimizers that really hold param groups and
state (LR naming, fused-kernel syncing, checkpoint state creation, schedules per table) walks here.
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
from torchrec.optim.keyed import CombinedOptimizer, OptimizerWrapper


def leaf_optimizers(
    optimizer: torch.optim.Optimizer, outer_key: Optional[str] = None
) -> Iterator[tuple[Optional[str], torch.optim.Optimizer]]:
    """(key, leaf) for every optimizer that owns its param groups: plain torch optimizers, torchrec's
    `KeyedOptimizerWrapper`s and fused (embedding-kernel) optimizers. `key` is the outermost
    non-empty `CombinedOptimizer` key above the leaf (None at top level), so every group of DMP's
    fused optimizer carries the key its caller combined it under."""
    if isinstance(optimizer, CombinedOptimizer):
        for key, child in optimizer.optimizers:
            yield from leaf_optimizers(child, outer_key or key or None)
    elif isinstance(optimizer, OptimizerWrapper):
        yield from leaf_optimizers(optimizer._optimizer, outer_key)
    else:
        yield outer_key, optimizer
