"""A numerically stable, weighted, distributed mean.

Summing values and weights separately in float32 loses precision on long evaluations (millions of
examples); a running mean updated in Welford's form keeps the state near the data's scale.
"""
from __future__ import annotations

from typing import Union

import torch
import torchmetrics

STATE_DTYPE = torch.float64


def _broadcast_weight(value: torch.Tensor, weight: Union[float, torch.Tensor]) -> torch.Tensor:
    if not torch.is_tensor(weight):
        return torch.full_like(value, float(weight))
    try:
        return torch.broadcast_to(weight.to(value), value.shape)
    except RuntimeError:
        raise ValueError(
            f"weight of shape {tuple(weight.shape)} does not broadcast to values of shape "
            f"{tuple(value.shape)}."
        ) from None


def update_mean(
    mean: torch.Tensor,
    weight_sum: torch.Tensor,
    value: torch.Tensor,
    weight: Union[float, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a batch of weighted values into a running (mean, weight_sum), batched Welford style.

    weight_sum' = weight_sum + sum(w); mean' = mean + sum(w / weight_sum' * (value - mean)).
    A batch whose weights sum to zero leaves the state unchanged (no 0/0).
    """
    value = value.to(mean.dtype).reshape(-1)
    weight = _broadcast_weight(value, weight)
    new_weight_sum = weight_sum + weight.sum()
    safe_total = torch.where(new_weight_sum == 0, torch.ones_like(new_weight_sum), new_weight_sum)
    new_mean = mean + ((weight / safe_total) * (value - mean)).sum()
    new_mean = torch.where(new_weight_sum == 0, mean, new_mean)
    return new_mean, new_weight_sum


def stable_mean_dist_reduce_fn(state: torch.Tensor) -> torch.Tensor:
    """Merge per-worker (mean, weight_sum) rows of a [workers, 2] tensor into one (mean, weight_sum)."""
    means, weight_sums = state[:, 0], state[:, 1]
    total = weight_sums.sum()
    if total == 0:
        return torch.stack([torch.zeros_like(total), total])
    merged_mean = ((weight_sums / total) * means).sum()
    return torch.stack([merged_mean, total])


def new_mean_state() -> torch.Tensor:
    return torch.zeros(2, dtype=STATE_DTYPE)


def fold_into_state(
    state: torch.Tensor, value: torch.Tensor, weight: Union[float, torch.Tensor]
) -> torch.Tensor:
    """`update_mean` on a packed [mean, weight_sum] state, the form kept in metric states."""
    mean, weight_sum = update_mean(state[0], state[1], value, weight)
    return torch.stack([mean, weight_sum])


class StableMean(torchmetrics.Metric):
    """Weighted mean of everything passed to `update`, merged exactly across ranks."""

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("mean_and_weight_sum", default=new_mean_state(),
                       dist_reduce_fx=stable_mean_dist_reduce_fn)

    def update(self, value: torch.Tensor, weight: Union[float, torch.Tensor] = 1.0) -> None:
        value = torch.as_tensor(value)
        self.mean_and_weight_sum = fold_into_state(self.mean_and_weight_sum, value.detach(),
                                                   weight.detach() if torch.is_tensor(weight) else weight)

    def compute(self) -> torch.Tensor:
        return self.mean_and_weight_sum[0]
