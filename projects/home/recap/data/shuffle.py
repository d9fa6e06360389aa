"""Row shuffling and batching over chunks, without touching row data until a batch is gathered.

Like tf.data's `shuffle(buffer).batch(n, drop_remainder=True)`: each batch is a uniform sample
without replacement of the rows in the pool, and while more data is coming the pool keeps at
least `buffer_rows` rows after a batch is taken. Rows are only referenced (chunk, row index) here;
`gather` copies them into the batch's own arrays in one pass per column.
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping, Optional

import numpy as np
import pyarrow as pa

from tml.projects.home.recap.data.arrow_columns import Column, JaggedColumn
from tml.projects.home.recap.data.parquet_reader import Chunk

BatchPlan = list[tuple[Chunk, np.ndarray]]  # (chunk, its rows in this batch)


class PaddedBatchPlan(list):
    """A last, partial batch filled up to the batch size: its final `padding_rows` rows repeat a real
    row and must not count (the assembler gives them label 0 and weight 0)."""

    def __init__(self, parts: BatchPlan, padding_rows: int) -> None:
        super().__init__(parts)
        self.padding_rows = padding_rows

_COMPACT_BELOW = 4  # leftover rows of a chunk are copied out when fewer than 1/4 of its rows


@dataclasses.dataclass
class _PoolEntry:
    chunk: Chunk
    rows: np.ndarray  # rows of the chunk not yet emitted


class ShufflePool:
    def __init__(
        self,
        batch_rows: int,
        buffer_rows: int,
        rng: np.random.Generator,
        widths: Optional[Mapping[str, int]] = None,
    ) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        self._batch_rows = batch_rows
        self._shuffle = buffer_rows > 1
        self._buffer_rows = buffer_rows if self._shuffle else 0
        self._rng = rng
        self._widths = dict(widths or {})  # columns a batch keeps; compaction copies no more than these
        self._entries: list[_PoolEntry] = []
        self._pending = 0

    @property
    def pending_rows(self) -> int:
        return self._pending

    def add(self, chunk: Chunk) -> Iterator[BatchPlan]:
        """Add a chunk and yield the batches that can be taken while keeping the buffer filled."""
        self._entries.append(_PoolEntry(chunk, np.arange(chunk.num_rows)))
        self._pending += chunk.num_rows
        yield from self._take(keep=self._buffer_rows)

    def drain(self, pad_last: bool = False) -> Iterator[BatchPlan]:
        """At the end of the data: the remaining full batches, then the rows left over (fewer than a
        batch) either dropped, as tf.data's drop_remainder, or with `pad_last` as a PaddedBatchPlan
        of full size (evaluation: every row counts, and every batch has the same shape)."""
        yield from self._take(keep=0)
        if pad_last and self._pending:
            entries = np.repeat(np.arange(len(self._entries)), [len(entry.rows) for entry in self._entries])
            rows = np.concatenate([entry.rows for entry in self._entries])
            padding = self._batch_rows - len(rows)
            filler = (self._entries[0].chunk, np.repeat(self._entries[0].rows[:1], padding))
            yield PaddedBatchPlan(self._plan(entries, rows) + [filler], padding)
        self._entries, self._pending = [], 0

    def _take(self, keep: int) -> Iterator[BatchPlan]:
        count = (self._pending - keep) // self._batch_rows
        if count <= 0:
            return
        entry_of = np.repeat(np.arange(len(self._entries)), [len(entry.rows) for entry in self._entries])
        row_of = np.concatenate([entry.rows for entry in self._entries])
        order = self._rng.permutation(len(row_of)) if self._shuffle else np.arange(len(row_of))
        taken = count * self._batch_rows
        for start in range(0, taken, self._batch_rows):
            picked = order[start: start + self._batch_rows]
            yield self._plan(entry_of[picked], row_of[picked])
        self._keep(entry_of[order[taken:]], row_of[order[taken:]])

    def _plan(self, entries: np.ndarray, rows: np.ndarray) -> BatchPlan:
        by_entry = np.argsort(entries, kind="stable")
        entries, rows = entries[by_entry], rows[by_entry]
        bounds = np.flatnonzero(np.diff(entries)) + 1
        return [
            (self._entries[int(group_entries[0])].chunk, group_rows)
            for group_entries, group_rows in zip(np.split(entries, bounds), np.split(rows, bounds))
        ]

    def _keep(self, entries: np.ndarray, rows: np.ndarray) -> None:
        kept: list[_PoolEntry] = []
        for index, entry in enumerate(self._entries):
            mine = np.sort(rows[entries == index])
            if not len(mine):
                continue
            if len(mine) * _COMPACT_BELOW < entry.chunk.num_rows:
                # A few leftover rows would otherwise pin their whole chunk (often a row group of
                # hundreds of MB); copying them out lets that memory go.
                chunk = entry.chunk
                entry = _PoolEntry(Chunk(chunk.source, len(mine), gather([(chunk, mine)], self._widths)), np.arange(len(mine)))
                mine = entry.rows
            kept.append(_PoolEntry(entry.chunk, mine))
        self._entries = kept
        self._pending = len(rows)


# numpy asks the kernel for huge pages on arrays of 4 MiB or more; with THP defrag on "madvise" the
# first touch of such memory can stall on compaction (6x slower gathers were measured). So batch
# arrays are not numpy's own, and are filled through temporaries below that size.
_TEMPORARY_BYTES = 2 << 20


def _empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array in Arrow's memory pool. Each batch needs ~115 MB of these at 8192 rows
    of the production layout: torch's allocator (glibc) maps such blocks anew and faults them in page
    by page every batch, while the pool reuses what the previous batches freed (loader 0.37 -> 0.50
    of read_table). The array (and any tensor made from it) keeps the buffer alive."""
    if dtype == object:
        return np.empty(shape, dtype=object)
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    buffer = pa.allocate_buffer(max(size, 1) * dtype.itemsize)
    return np.frombuffer(buffer, dtype=dtype, count=size).reshape(shape)


def _gather_dense(parts: list[np.ndarray], rows: list[np.ndarray], width: Optional[int]) -> np.ndarray:
    first = parts[0]
    columns = slice(None) if first.ndim == 1 or width is None else slice(0, min(width, first.shape[1]))
    inner = first.shape[1:] if first.ndim == 1 else (len(range(first.shape[1])[columns]),)
    out = _empty((sum(len(r) for r in rows),) + inner, first.dtype)
    row_bytes = max(1, int(np.prod(inner, dtype=np.int64)) * first.dtype.itemsize)
    step = max(1, _TEMPORARY_BYTES // row_bytes)
    position = 0
    for array, picked in zip(parts, rows):
        for start in range(0, len(picked), step):
            block = picked[start: start + step]
            # Fancy indexing copies at memory speed; np.take on a column-sliced view is ~10x slower.
            out[position: position + len(block)] = array[block, columns] if array.ndim == 2 else array[block]
            position += len(block)
    return out


def gather(plan: BatchPlan, widths: Optional[Mapping[str, int]] = None) -> dict[str, Column]:
    """The batch's columns as fresh, writable arrays.

    `widths` limits 2-d columns to their first columns (e.g. when preprocessing truncates them anyway).
    """
    widths = widths or {}
    names = plan[0][0].columns.keys()
    rows = [picked for _, picked in plan]
    batch: dict[str, Column] = {}
    for name in names:
        parts = [chunk.columns[name] for chunk, _ in plan]
        if isinstance(parts[0], JaggedColumn):
            batch[name] = JaggedColumn.concatenate([part.take(r) for part, r in zip(parts, rows)])
        else:
            batch[name] = _gather_dense(parts, rows, widths.get(name))  # type: ignore[arg-type]
    return batch
