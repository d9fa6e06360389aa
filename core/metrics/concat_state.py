"""Base for metrics that must keep every example (exact AUC, exact NRCE).

torchmetrics gathers a list state one tensor per rank; a rank that never updated has an empty list
and skips the collective while the others wait in it, a hang. Before syncing, every empty list state
gets one zero-length tensor so all ranks take part in the same collectives.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torchmetrics
from torchmetrics.utilities.data import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

EXAMPLE_DTYPE = torch.float64


class ConcatStateMetric(torchmetrics.Metric):
    """Keeps float64 per-example columns in list states reduced by concatenation."""

    full_state_update = False

    def __init__(self, column_names: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._column_names = column_names
        for name in column_names:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def _append_columns(self, **columns: torch.Tensor) -> None:
        for name in self._column_names:
            getattr(self, name).append(columns[name].detach().to(EXAMPLE_DTYPE).reshape(-1))

    def _concatenated(self, name: str) -> torch.Tensor:
        state = getattr(self, name)
        if isinstance(state, torch.Tensor):
            return state.reshape(-1)
        if not state:
            return torch.zeros(0, dtype=EXAMPLE_DTYPE, device=self.device)
        return dim_zero_cat(state).reshape(-1)

    def _sync_dist(
        self, dist_sync_fn: Callable = gather_all_tensors, process_group: Optional[Any] = None
    ) -> None:
        for name in self._column_names:
            if isinstance(getattr(self, name), list) and not getattr(self, name):
                # A new list: the cached local state (restored by unsync) must stay untouched.
                setattr(self, name, [torch.zeros(0, dtype=EXAMPLE_DTYPE, device=self.device)])
        super()._sync_dist(dist_sync_fn, process_group=process_group)
