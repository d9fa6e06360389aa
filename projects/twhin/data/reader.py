"""Reading edge rows from Parquet files: which rows a rank owns, and checking them against the graph.

Rows are addressed globally, in the order of the sorted file list. `offset`/`limit` cut a window out
of that sequence, and the window is split into `world_size` contiguous parts, one per rank, so every
rank opens only the files (and row groups) its part touches.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tml.common.parquet import list_parquet_files, open_parquet
from tml.core.errors import DataError
from tml.projects.twhin.data.schema import GraphSchema


@dataclasses.dataclass(frozen=True)
class ColumnNames:
    lhs: str = "lhs"
    rel: str = "rel"
    rhs: str = "rhs"
    weight: str = "weight"


@dataclasses.dataclass
class EdgeArrays:
    """Edges as parallel numpy arrays (int64 ids, float32 weights)."""

    lhs: np.ndarray
    rel: np.ndarray
    rhs: np.ndarray
    weight: np.ndarray

    def __len__(self) -> int:
        return int(self.lhs.shape[0])

    def take(self, index: np.ndarray | slice) -> "EdgeArrays":
        return EdgeArrays(self.lhs[index], self.rel[index], self.rhs[index], self.weight[index])

    @staticmethod
    def empty() -> "EdgeArrays":
        ids = np.zeros(0, dtype=np.int64)
        return EdgeArrays(ids, ids.copy(), ids.copy(), np.zeros(0, dtype=np.float32))

    @staticmethod
    def concat(parts: Sequence["EdgeArrays"]) -> "EdgeArrays":
        if not parts:
            return EdgeArrays.empty()
        return EdgeArrays(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("lhs", "rel", "rhs", "weight")))

    @staticmethod
    def from_lists(
        lhs: Sequence[int], rel: Sequence[int], rhs: Sequence[int], weight: Optional[Sequence[float]] = None
    ) -> "EdgeArrays":
        ids = [np.asarray(values, dtype=np.int64) for values in (lhs, rel, rhs)]
        weights = np.ones(len(ids[0]), dtype=np.float32) if weight is None else np.asarray(weight, dtype=np.float32)
        return EdgeArrays(*ids, weights)


@dataclasses.dataclass(frozen=True)
class RowRange:
    """Rows [start, stop) of one file."""

    path: str
    start: int
    stop: int


def list_edge_files(data_root: str) -> list[str]:
    """The Parquet files `data_root` names (glob, directory or file), sorted; at least one."""
    try:
        return list_parquet_files(data_root)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"data_root '{data_root}' matches no Parquet edge file: {error}.") from None


def count_rows(files: Sequence[str]) -> list[int]:
    """Rows per file, from the Parquet footers only."""
    counts = []
    for path in files:
        with open_parquet(path) as parquet:
            counts.append(parquet.metadata.num_rows)
    return counts


def window(total_rows: int, offset: Optional[int], limit: Optional[int]) -> tuple[int, int]:
    """Global [start, stop) of the rows selected by offset/limit."""
    start = min(offset or 0, total_rows)
    stop = total_rows if limit is None else min(total_rows, start + limit)
    return start, stop


def rank_share(start: int, stop: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank's contiguous part of [start, stop); part sizes differ by at most one row."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size}).")
    count = stop - start
    return start + count * rank // world_size, start + count * (rank + 1) // world_size


def row_ranges(files: Sequence[str], counts: Sequence[int], start: int, stop: int) -> list[RowRange]:
    """The per-file pieces of global rows [start, stop)."""
    ranges = []
    file_start = 0
    for path, count in zip(files, counts):
        file_stop = file_start + count
        low, high = max(start, file_start), min(stop, file_stop)
        if low < high:
            ranges.append(RowRange(path, low - file_start, high - file_start))
        file_start = file_stop
    return ranges


def _read_table(parquet: pq.ParquetFile, row_range: RowRange, columns: list[str]) -> pa.Table:
    """Rows [start, stop) of the file, reading only the row groups that hold them."""
    available = parquet.schema_arrow.names
    missing = [column for column in columns if column not in available]
    if missing:
        raise DataError(f"{row_range.path}: no column(s) {missing}; the file has columns {available}.")
    metadata = parquet.metadata
    groups, group_start, first_row = [], 0, None
    for index in range(metadata.num_row_groups):
        group_stop = group_start + metadata.row_group(index).num_rows
        if group_start < row_range.stop and group_stop > row_range.start:
            groups.append(index)
            first_row = group_start if first_row is None else first_row
        group_start = group_stop
    if not groups:
        return parquet.schema_arrow.empty_table().select(columns)
    table = parquet.read_row_groups(groups, columns=columns)
    return table.slice(row_range.start - first_row, row_range.stop - row_range.start)


def _integer_column(table: pa.Table, column: str, path: str) -> np.ndarray:
    array = table.column(column)
    if not pa.types.is_integer(array.type):
        raise DataError(f"{path}: column '{column}' has type {array.type}; node and relation ids must be integers.")
    if array.null_count:
        raise DataError(f"{path}: column '{column}' has {array.null_count} null value(s).")
    return array.to_numpy().astype(np.int64, copy=False)


def _weight_column(table: pa.Table, column: str, row_range: RowRange) -> np.ndarray:
    """Edge weights scale the loss: NaN poisons training, a negative weight rewards a wrong score."""
    array = table.column(column)
    if not (pa.types.is_floating(array.type) or pa.types.is_integer(array.type)):
        raise DataError(f"{row_range.path}: column '{column}' has type {array.type}; edge weights must be numbers.")
    if array.null_count:
        raise DataError(f"{row_range.path}: column '{column}' has {array.null_count} null value(s).")
    weights = array.to_numpy().astype(np.float32)
    bad = ~np.isfinite(weights) | (weights < 0)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{row_range.path}: column '{column}' has value {weights[first]} at row {row_range.start + first}; "
            f"edge weights must be finite and >= 0 ({int(bad.sum())} bad row(s) in the rows read)."
        )
    return weights


def _fail_first(bad: np.ndarray, values: np.ndarray, row_range: RowRange, column: str, message: str) -> None:
    first = int(np.flatnonzero(bad)[0])
    raise DataError(
        f"{row_range.path}: column '{column}' has value {int(values[first])} at row {row_range.start + first}, "
        f"{message} ({int(bad.sum())} bad row(s) in the rows read)."
    )


def check_edges(edges: EdgeArrays, schema: GraphSchema, row_range: RowRange, columns: ColumnNames) -> None:
    """Every rel names a relation and every id lies inside its relation's table; else a ValueError
    naming the file, column, value (with its row) and the table size."""
    num_relations = schema.num_relations
    bad_rel = (edges.rel < 0) | (edges.rel >= num_relations)
    if bad_rel.any():
        listed = ", ".join(f"{i}={name}" for i, name in enumerate(schema.relation_names[:10]))
        listed += ", ..." if num_relations > 10 else ""
        _fail_first(bad_rel, edges.rel, row_range, columns.rel,
                    f"which is not a relation index (the config has {num_relations} relations: {listed})")
    sizes = schema.sizes_array()
    tables = schema.relation_tables()
    for side, ids, column in ((0, edges.lhs, columns.lhs), (1, edges.rhs, columns.rhs)):
        table_of_row = tables[edges.rel, side]
        bad = (ids < 0) | (ids >= sizes[table_of_row])
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            table = int(table_of_row[first])
            relation = schema.relation_names[int(edges.rel[first])]
            size = schema.table_sizes[table]
            _fail_first(bad, ids, row_range, column,
                        f"outside table '{schema.table_names[table]}' of size {size} (valid ids 0..{size - 1}; "
                        f"relation '{relation}')")


def read_row_range(row_range: RowRange, schema: GraphSchema, columns: ColumnNames = ColumnNames()) -> EdgeArrays:
    """One file's rows, checked against `schema`; weights default to 1 when the file has no weight column."""
    with open_parquet(row_range.path) as parquet:
        has_weight = columns.weight in parquet.schema_arrow.names
        names = [columns.lhs, columns.rel, columns.rhs] + ([columns.weight] if has_weight else [])
        table = _read_table(parquet, row_range, names)
    edges = EdgeArrays(
        lhs=_integer_column(table, columns.lhs, row_range.path),
        rel=_integer_column(table, columns.rel, row_range.path),
        rhs=_integer_column(table, columns.rhs, row_range.path),
        weight=(
            _weight_column(table, columns.weight, row_range)
            if has_weight
            else np.ones(table.num_rows, dtype=np.float32)
        ),
    )
    check_edges(edges, schema, row_range, columns)
    return edges


def read_edges(
    data_root: str | Sequence[str],
    schema: GraphSchema,
    columns: ColumnNames = ColumnNames(),
    offset: Optional[int] = None,
    limit: Optional[int] = None,
    rank: int = 0,
    world_size: int = 1,
) -> EdgeArrays:
    """Rank's part of the offset/limit window over all files of `data_root` (one pattern or several)."""
    roots = [data_root] if isinstance(data_root, str) else list(data_root)
    files = [path for root in roots for path in list_edge_files(root)]
    counts = count_rows(files)
    start, stop = window(sum(counts), offset, limit)
    low, high = rank_share(start, stop, rank, world_size)
    return EdgeArrays.concat([read_row_range(r, schema, columns) for r in row_ranges(files, counts, low, high)])
