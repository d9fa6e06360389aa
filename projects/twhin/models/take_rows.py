"""Rows of the pooled embeddings by lookup, split into parts, with a backward that writes the
pooled gradient once.

Autograd of `pooled.index_select(0, rows).split(sizes)` first concatenates the parts' gradients
into one [L, D] tensor, then scatters it into a zero-filled [M, D] one. Here each part's gradient
is copied straight to its rows. Every row is taken by at most one lookup (a lookup's row is its
own position in its table), so copying is adding; rows that no lookup takes (empty padding bags,
whose gradient the embedding kernel never reads) are zero-filled only when there are any.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch


class _TakeRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, source: torch.Tensor, rows: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        parts = rows.split(list(sizes))
        ctx.save_for_backward(*parts)
        ctx.source_shape = source.shape
        ctx.every_row_taken = rows.shape[0] == source.shape[0]
        return tuple(source.index_select(0, part) for part in parts)

    @staticmethod
    def backward(ctx: Any, *grads: Optional[torch.Tensor]) -> tuple[Optional[torch.Tensor], None, None]:  # type: ignore[override]
        parts = ctx.saved_tensors
        reference = next(grad for grad in grads if grad is not None)
        make = torch.empty if ctx.every_row_taken else torch.zeros
        grad_source = make(ctx.source_shape, dtype=reference.dtype, device=reference.device)
        for part, grad in zip(parts, grads):
            if grad is None:
                grad = torch.zeros(part.shape[0], ctx.source_shape[1], dtype=reference.dtype, device=reference.device)
            grad_source.index_copy_(0, part, grad)
        return grad_source, None, None


def take_rows(source: torch.Tensor, rows: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """`source.index_select(0, rows).split(sizes)` for [M, D] source and [L] distinct row indices."""
    if source.dim() != 2 or rows.dim() != 1:
        raise ValueError(f"take_rows needs a [M, D] source and [L] rows; got {tuple(source.shape)} and {tuple(rows.shape)}")
    return _TakeRows.apply(source, rows, sizes)
