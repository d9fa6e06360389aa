"""Stop (or skip) a training step whose loss is NaN or infinite, before it touches the weights.

The check runs on the loss of each micro-batch, between the forward and the backward: tables with a
fused optimizer are updated inside the backward, so once it has run nothing can be undone. Ranks
agree through one all-reduce of a flag, so all of them stop (or skip) the same step together and
no rank is left waiting in a collective.

A skipped step runs a backward that reaches no parameter: no gradient, no fused update, and
torch's dense optimizers leave parameters without a gradient alone.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Mapping, Optional

import torch
import torch.distributed as dist

from tml.core.errors import TmlError

# A learning rate above this is named as the likely cause of a diverged run.
SUSPICIOUS_LEARNING_RATE = 1e3


class NonFiniteLossError(TmlError):
    """The loss of a training step is NaN or infinite (on at least one rank)."""

    def __init__(self, message: str, causes: Optional[list[str]] = None) -> None:
        super().__init__(message)
        self.causes = causes or []


class NonFiniteStateError(TmlError):
    """A parameter holds NaN or infinite values; it is not checkpointed."""


def _all_ranks_finite(local_finite: bool) -> bool:
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local_finite
    flag = torch.tensor([0 if local_finite else 1], dtype=torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) == 0


def _named_tensors(value: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    """Floating-point tensors inside a batch (dataclass, mapping, KeyedJaggedTensor, tensor)."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point():
            yield prefix, value
        return
    weights = getattr(value, "weights_or_none", None)
    if callable(weights):  # a KeyedJaggedTensor's per-id weights
        tensor = weights()
        if tensor is not None and tensor.is_floating_point():
            yield f"{prefix}.weights", tensor
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _named_tensors(getattr(value, field.name), f"{prefix}.{field.name}" if prefix else field.name)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _named_tensors(item, f"{prefix}.{key}" if prefix else str(key))


def nonfinite_inputs(batch: Any) -> list[str]:
    """Names of the batch's floating-point fields holding NaN or inf, with a count of bad values."""
    found = []
    for name, tensor in _named_tensors(batch, ""):
        bad = int((~torch.isfinite(tensor.detach())).sum())
        if bad:
            found.append(f"input '{name}' has {bad} NaN/inf value(s)")
    return found


def nonfinite_parameters(model: torch.nn.Module, limit: int = 5) -> list[str]:
    """Names of (this rank's part of) parameters holding NaN or inf, at most `limit`."""
    found = []
    for name, value in model.state_dict().items():
        if hasattr(value, "local_shards"):  # ShardedTensor: this rank's shards (maybe none)
            tensors = [shard.tensor for shard in value.local_shards()]
        elif hasattr(value, "to_local"):  # DTensor
            tensors = [value.to_local()]
        else:
            tensors = [value]
        for tensor in tensors:
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.numel():
                if not bool(torch.isfinite(tensor).all()):
                    found.append(name)
                    break
        if len(found) >= limit:
            break
    return found


def suspicious_learning_rates(optimizer: torch.optim.Optimizer) -> list[str]:
    found = []
    for index, group in enumerate(optimizer.param_groups):
        lr = float(group["lr"])
        if not math.isfinite(lr) or lr > SUSPICIOUS_LEARNING_RATE:
            found.append(f"learning rate of param group {index} is {lr:g}")
    return found


def check_finite_state(model: torch.nn.Module, step: int) -> None:
    """Raise NonFiniteStateError on every rank when any rank holds a NaN/inf parameter (collective)."""
    bad = nonfinite_parameters(model)
    if _all_ranks_finite(not bad):
        return
    named = f": {', '.join(bad)}" if bad else " on another rank"
    raise NonFiniteStateError(f"after step {step} the model has NaN/inf parameters{named}; no checkpoint is written.")


class FiniteLossGuard:
    """Checks each micro-batch's loss on every rank; allows `max_skipped_steps` bad ones in a run."""

    def __init__(self, max_skipped_steps: int = 0) -> None:
        if max_skipped_steps < 0:
            raise ValueError(f"max_skipped_steps must be >= 0, got {max_skipped_steps}")
        self.max_skipped_steps = max_skipped_steps
        self.skipped = 0
        self.skipped_in_step = False

    def guard(self, loss: torch.Tensor, batch: Any) -> torch.Tensor:
        """`loss`, or a loss whose backward updates nothing when the step is skipped; raises
        NonFiniteLossError when the allowance is used up."""
        if _all_ranks_finite(bool(torch.isfinite(loss.detach()).all())):
            return loss
        causes = nonfinite_inputs(batch)
        if not self.skipped_in_step:
            if self.skipped >= self.max_skipped_steps:
                raise NonFiniteLossError(f"loss is {float(loss.detach().float().sum())}", causes)
            self.skipped += 1
            self.skipped_in_step = True
        return torch.zeros((), dtype=loss.dtype, device=loss.device, requires_grad=True)
