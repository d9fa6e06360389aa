"""The stream of chunks one rank reads: passes over its share of files, interleaving, errors, cache."""
from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import threading
from typing import Iterator, Optional, Sequence

import pyarrow as pa

from tml.core.errors import DataError
from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.data.arrow_columns import ColumnError
from tml.projects.home.recap.data.parquet_reader import Chunk, ParquetChunkReader, ReadUnit, num_row_groups
from tml.common.prefetch import BackgroundIterator
from tml.projects.home.recap.data.sharding import pass_rng, pass_units

# What a damaged or foreign file raises while being read; these are skipped under ignore_data_errors.
DATA_ERRORS = (OSError, EOFError, ValueError, pa.ArrowException)


class DataReadError(DataError, RuntimeError):
    """A data file that cannot be read (corrupt page, truncated, not Parquet); names the file."""


@dataclasses.dataclass
class DataStats:
    """Counters of one dataset iteration; safe to read from any thread."""

    passes: int = 0
    chunks: int = 0
    rows_read: int = 0
    batches: int = 0
    nonfinite_continuous_values: int = 0
    dropped_rows: int = 0  # bad label or sparse id, dropped under ignore_data_errors
    bad_files: list[str] = dataclasses.field(default_factory=list)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)


@dataclasses.dataclass
class SourceOptions:
    files: Sequence[str]
    rank: int
    world_size: int
    seed: int
    repeat: bool
    file_batch_size: int
    parallel_reads: int
    ignore_data_errors: bool
    cache: bool


class ChunkSource:
    def __init__(self, reader: ParquetChunkReader, options: SourceOptions, stats: DataStats) -> None:
        """`reader.read(unit)` yields chunks; its `row_group_count(path)`, if it has one, says how a
        file splits among ranks (default: the file's Parquet row groups)."""
        self._reader = reader
        self._options = options
        self._stats = stats
        self._cached: Optional[list[Chunk]] = None
        self._next_pass = 0  # a new iteration continues the pass count, so it gets a new file order
        self._row_group_count = functools.lru_cache(maxsize=None)(getattr(reader, "row_group_count", num_row_groups))

    def _read_unit(self, unit: ReadUnit) -> Iterator[Chunk]:
        try:
            yield from self._reader.read(unit)
        except DATA_ERRORS as error:
            if not self._options.ignore_data_errors:
                if isinstance(error, ColumnError):
                    raise  # already names the file and the column
                raise DataReadError(
                    f"reading {unit} failed: {error}; set ignore_data_errors: true to skip such files"
                ) from error
            self._stats.bad_files.append(str(unit))
            logging.warning(f"skipping unreadable data {unit}: {error}", rank=-1)

    def _read_group(self, units: Sequence[ReadUnit]) -> Iterator[Chunk]:
        for unit in units:
            yield from self._read_unit(unit)

    def _interleave(self, units: Sequence[ReadUnit]) -> Iterator[Chunk]:
        """Groups of file_batch_size units read one after another; parallel_reads groups round-robin."""
        size = self._options.file_batch_size
        groups = (units[start: start + size] for start in range(0, len(units), size))
        if self._options.parallel_reads <= 1:
            for group in groups:
                yield from self._read_group(group)
            return
        active: "collections.deque[BackgroundIterator[Chunk]]" = collections.deque()
        try:
            for group in itertools.islice(groups, self._options.parallel_reads):
                active.append(BackgroundIterator(self._read_group(group), depth=1, name="tml-read"))
            while active:
                current = active.popleft()
                try:
                    chunk = next(current)
                except StopIteration:
                    following = next(groups, None)
                    if following is not None:
                        active.append(BackgroundIterator(self._read_group(following), depth=1, name="tml-read"))
                    continue
                active.append(current)
                yield chunk
        finally:
            for iterator in active:
                iterator.close()

    def _one_pass(self, pass_index: int) -> Iterator[Chunk]:
        options = self._options
        if self._cached is not None:
            order = pass_rng(options.seed, pass_index, options.rank).permutation(len(self._cached))
            yield from (self._cached[i] for i in order)
            return
        units = pass_units(options.files, options.seed, pass_index, options.rank, options.world_size, self._row_group_count)
        kept: Optional[list[Chunk]] = [] if options.cache else None
        for chunk in self._interleave(units):
            if kept is not None:
                kept.append(chunk)
            yield chunk
        if kept is not None:
            self._cached = kept

    def chunks(self) -> Iterator[Chunk]:
        while True:
            pass_index = self._next_pass
            self._next_pass += 1
            self._stats.add(passes=1)
            rows = 0
            for chunk in self._one_pass(pass_index):
                rows += chunk.num_rows
                self._stats.add(chunks=1, rows_read=chunk.num_rows)
                yield chunk
            if rows == 0:
                raise ValueError(
                    f"rank {self._options.rank} read no rows in pass {pass_index} over {len(self._options.files)} "
                    f"files (skipped as unreadable: {self._stats.bad_files})"
                )
            if not self._options.repeat:
                return
