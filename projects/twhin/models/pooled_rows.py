"""The lookups' rows out of the pooled embeddings [stride, T * D], with backwards that write the
pooled gradient once.

`take_rows` serves any graph. `take_side_blocks` serves graphs whose relations all go from one
table to another (users -> tweets): there every lookup's row is a block of the pooled output as it
is, so the forward copies nothing.

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
    def forward(  # type: ignore[override]
        ctx: Any, source: torch.Tensor, rows: torch.Tensor, sizes: Sequence[int]
    ) -> tuple[torch.Tensor, ...]:
        parts = rows.split(list(sizes))
        ctx.save_for_backward(*parts)
        ctx.source_shape = source.shape
        ctx.every_row_taken = rows.shape[0] == source.shape[0]
        ctx.set_materialize_grads(False)  # an unused part's gradient arrives as None
        return tuple(source.index_select(0, part) for part in parts)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, *grads: Optional[torch.Tensor]
    ) -> tuple[Optional[torch.Tensor], None, None]:
        parts = ctx.saved_tensors
        reference = next(grad for grad in grads if grad is not None)
        make = torch.empty if ctx.every_row_taken else torch.zeros
        grad_source = make(ctx.source_shape, dtype=reference.dtype, device=reference.device)
        for part, grad in zip(parts, grads):
            if grad is None:
                grad = reference.new_zeros(part.shape[0], ctx.source_shape[1])
            grad_source.index_copy_(0, part, grad)
        return grad_source, None, None


def take_rows(source: torch.Tensor, rows: torch.Tensor, sizes: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """`source.index_select(0, rows).split(sizes)` for [M, D] source and [L] distinct row indices."""
    if source.dim() != 2 or rows.dim() != 1:
        raise ValueError(
            f"take_rows needs a [M, D] source and [L] rows; got {tuple(source.shape)} and {tuple(rows.shape)}"
        )
    return _TakeRows.apply(source, rows, sizes)


class _TakeSideBlocks(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, pooled: torch.Tensor, dim: int, lhs_table: int, rhs_table: int, size: int
    ) -> tuple[torch.Tensor, ...]:
        lhs_columns, rhs_columns = pooled.narrow(1, lhs_table * dim, dim), pooled.narrow(1, rhs_table * dim, dim)
        ctx.layout = (pooled.shape, dim, lhs_table, rhs_table, size)
        ctx.set_materialize_grads(False)  # an unused block's gradient arrives as None
        return lhs_columns[:size], rhs_columns[:size], lhs_columns[size:], rhs_columns[size:]

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, *grads: Optional[torch.Tensor]
    ) -> tuple[Optional[torch.Tensor], None, None, None, None]:
        shape, dim, lhs_table, rhs_table, size = ctx.layout
        reference = next(grad for grad in grads if grad is not None)
        rows = (size, size, shape[0] - size, shape[0] - size)
        grads = tuple(
            grad if grad is not None else reference.new_zeros(count, dim) for grad, count in zip(grads, rows)
        )
        # Each table's column block, top (edges) to bottom (sampled), then the blocks side by side:
        # one concatenation writes the gradient, in the layout the embedding kernel reads.
        sides = {
            lhs_table: torch.cat([grads[0], grads[2]]) if rows[2] else grads[0],
            rhs_table: torch.cat([grads[1], grads[3]]) if rows[3] else grads[1],
        }
        unused = reference.new_zeros(shape[0], dim) if len(sides) < shape[1] // dim else None
        columns = [sides.get(table, unused) for table in range(shape[1] // dim)]
        return torch.cat(columns, dim=1), None, None, None, None


def take_side_blocks(
    pooled: torch.Tensor, dim: int, lhs_table: int, rhs_table: int, size: int
) -> tuple[torch.Tensor, ...]:
    """(lhs rows, rhs rows, lhs-side sampled rows, rhs-side sampled rows) as views of `pooled`
    [stride, T * D], for batches of `size` edges whose lhs nodes all come from table `lhs_table` and
    rhs nodes from another, `rhs_table`: each table's lookups are then that side's, in edge order
    (see `EdgeBatch`), so lookup i of a side is row i of its table's column block."""
    if pooled.dim() != 2 or lhs_table == rhs_table:
        raise ValueError(f"take_side_blocks needs [stride, T * D] pooled rows and two tables; got "
                         f"{tuple(pooled.shape)}, tables {lhs_table} and {rhs_table}")
    return _TakeSideBlocks.apply(pooled, dim, lhs_table, rhs_table, size)
