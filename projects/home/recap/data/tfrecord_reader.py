"""Read the original's TFRecord files of tf.Example (gzip or not) directly, as the pipeline's chunks.

`RecapDataset` picks this reader for files named `*.gz`, `*.gzip`, `*.tfrecord` or `*.tfrecords`
(the original's configs name `*.gz`), and the Parquet reader for every other file. Rows come out
exactly as the Parquet reader gives them (same names, dtypes, defaults for absent features), so
shuffling, preprocessing and batching are shared. Decoding is protobuf's parse of each example,
then one vectorised decode per feature and chunk (tfrecord_decode.py): slower than Parquet (see
bench/recap_tfrecord.py), so large data read many times is better converted once with
`tfrecord_import`.

A TFRecord file has no row groups to share among ranks when there are fewer files than ranks; its
records are then striped: record i belongs to stripe i % STRIPES, and ranks take stripes as they
would take row groups (each rank still decompresses the whole file).
"""
from __future__ import annotations

from typing import Iterator

from tml.projects.home.recap.data.parquet_reader import Chunk, ParquetChunkReader, ReadUnit, num_row_groups
from tml.projects.home.recap.data.segdense import FeaturePlan
from tml.projects.home.recap.data.tfrecord_decode import decode_examples
from tml.projects.home.recap.data.tfrecord_import import read_records

TFRECORD_SUFFIXES = (".gz", ".gzip", ".tfrecord", ".tfrecords")
STRIPES = 64


def is_tfrecord_path(path: str) -> bool:
    return path.lower().endswith(TFRECORD_SUFFIXES)


class TFRecordChunkReader:
    """Streams a TFRecord file (or some of its stripes) in chunks of `rows_per_chunk` examples."""

    def __init__(self, plan: FeaturePlan, rows_per_chunk: int) -> None:
        self._plan = plan
        self._features = [column.feature for column in plan.columns]
        self._rows_per_chunk = rows_per_chunk

    @staticmethod
    def row_group_count(path: str) -> int:
        del path
        return STRIPES

    def read(self, unit: ReadUnit) -> Iterator[Chunk]:
        stripes = None if unit.row_groups is None else frozenset(unit.row_groups)
        source = str(unit) if stripes is None else f"{unit.path} (stripes {sorted(stripes)} of {STRIPES})"
        pending: list[bytes] = []
        for index, record in enumerate(read_records(unit.path)):
            if stripes is not None and index % STRIPES not in stripes:
                continue
            pending.append(record)
            if len(pending) == self._rows_per_chunk:
                yield self._chunk(pending, source)
                pending = []
        if pending:
            yield self._chunk(pending, source)

    def _chunk(self, records: list[bytes], source: str) -> Chunk:
        by_feature = decode_examples(records, self._features, source)
        columns = {column.name: by_feature[column.feature.name] for column in self._plan.columns}
        return Chunk(source, len(records), columns)


class DataFileReader:
    """Parquet or TFRecord, chosen per file by its name."""

    def __init__(self, parquet: ParquetChunkReader, tfrecord: TFRecordChunkReader) -> None:
        self._parquet = parquet
        self._tfrecord = tfrecord

    def row_group_count(self, path: str) -> int:
        return self._tfrecord.row_group_count(path) if is_tfrecord_path(path) else num_row_groups(path)

    def read(self, unit: ReadUnit) -> Iterator[Chunk]:
        reader = self._tfrecord if is_tfrecord_path(unit.path) else self._parquet
        return reader.read(unit)
