"""Read Parquet files (or some of their row groups) as numpy chunks named as the pipeline knows them."""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Union

import pyarrow as pa
import pyarrow.parquet as pq

from tml.common.parquet import open_parquet
from tml.projects.home.recap.data.arrow_columns import Column, ColumnError, column_to_numpy
from tml.projects.home.recap.data.parquet_schema import plan_schema
from tml.projects.home.recap.data.segdense import FeaturePlan
from tml.projects.home.recap.data.validation import RowChecks


@dataclasses.dataclass(frozen=True)
class ReadUnit:
    """A file, or some of its row groups when there are fewer files than ranks."""

    path: str
    row_groups: Optional[tuple[int, ...]] = None

    def __str__(self) -> str:
        return self.path if self.row_groups is None else f"{self.path} (row groups {list(self.row_groups)})"


@dataclasses.dataclass
class Chunk:
    """Consecutive rows of one file; arrays may be read-only views of Arrow memory."""

    source: str
    num_rows: int
    columns: dict[str, Column]


def num_row_groups(path: str) -> int:
    with open_parquet(path) as parquet_file:
        return parquet_file.num_row_groups


def check_columns(schema: pa.Schema, plan: FeaturePlan, path: str) -> None:
    present = set(schema.names)
    missing = [name for name in plan.column_names if name not in present]
    if missing:
        others = f" (also missing: {missing[1:]})" if len(missing) > 1 else ""
        raise ColumnError(
            f"column '{missing[0]}' is missing from {path}{others}; expected schema "
            f"(from segdense {plan.schema_path}):\n{plan_schema(plan).to_string(show_field_metadata=False)}"
        )


class ParquetChunkReader:
    """Streams a unit one row group at a time; row groups over `max_chunk_rows` rows come in slices.

    Whole single row groups are the fastest read here (faster than read_table: no concatenation
    across row groups), and slicing huge ones keeps memory bounded whatever the writer chose.
    """

    def __init__(
        self, plan: FeaturePlan, max_chunk_rows: int, use_threads: bool = True, checks: Optional[RowChecks] = None
    ) -> None:
        """`checks`: labels and sparse ids checked per row as they are read (see data/validation.py)."""
        self._plan = plan
        self._max_chunk_rows = max_chunk_rows
        self._use_threads = use_threads
        self._checks = checks

    def read(self, unit: ReadUnit) -> Iterator[Chunk]:
        with open_parquet(unit.path) as parquet_file:
            check_columns(parquet_file.schema_arrow, self._plan, unit.path)
            indices = range(parquet_file.num_row_groups) if unit.row_groups is None else unit.row_groups
            for index in indices:
                yield from self._read_row_group(parquet_file, index, str(unit))

    def _read_row_group(self, parquet_file: pq.ParquetFile, index: int, source: str) -> Iterator[Chunk]:
        metadata = parquet_file.metadata
        rows = metadata.row_group(index).num_rows
        first_row = sum(metadata.row_group(i).num_rows for i in range(index))  # for error messages
        columns = self._plan.column_names
        if rows == 0:
            return
        if rows <= self._max_chunk_rows:
            table = parquet_file.read_row_group(index, columns=columns, use_threads=self._use_threads)
            yield self.to_chunk(table, source, first_row)
            return
        for record_batch in parquet_file.iter_batches(
            batch_size=self._max_chunk_rows, row_groups=[index], columns=columns, use_threads=self._use_threads
        ):
            if record_batch.num_rows:
                yield self.to_chunk(record_batch, source, first_row)
                first_row += record_batch.num_rows

    def to_chunk(self, data: Union[pa.RecordBatch, pa.Table], source: str, first_row: int = 0) -> Chunk:
        columns = {
            column.name: column_to_numpy(data.column(column.feature.name), column.feature, source)
            for column in self._plan.columns
        }
        num_rows = data.num_rows
        if self._checks is not None:
            bad = self._checks.bad_rows(data, columns, source, first_row)
            if bad is not None:
                columns = RowChecks.drop(columns, bad)
                num_rows -= int(bad.sum())
        return Chunk(source, num_rows, columns)
