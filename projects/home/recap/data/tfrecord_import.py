"""Convert the original's TFRecord files of tf.Example into our Parquet layout, without TensorFlow.

    python -m tml.projects.home.recap.data.tfrecord_import --schema_path segdense.json \
        --output_dir OUT 'gs://bucket/data/*.gz' [more paths or globs]

Each input file (GZIP or uncompressed, detected from its first bytes; local or fsspec) becomes one
Parquet file with a column per segdense feature. Record checksums are verified. A feature absent
from an example takes tf.Example parsing's default (0, 0.0, b"") as the original's FixedLenFeature
did. tf.Example protos come from the `tfrecord` package (pure Python, needs protobuf and crc32c).
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import posixpath
import struct
from typing import IO, TYPE_CHECKING, Iterator, Optional, Sequence

from tml.common.entry_point import call_command, command_parser, run_command
from tml.ml_logging.torch_logging import logging

# numpy, pyarrow and fsspec (through the modules below) are imported where used: `--help` needs none.
if TYPE_CHECKING:
    from tml.projects.home.recap.data.segdense import SegDenseFeature

_GZIP_MAGIC = b"\x1f\x8b"
_CRC_MASK_DELTA = 0xA282EAD8
_PROTO_KIND = {"float_list": "float_list", "int64_list": "int64_list", "bytes_list": "bytes_list"}
_STRIPPED_SUFFIXES = (".gz", ".gzip", ".tfrecords", ".tfrecord")


def _dependencies() -> tuple:
    try:
        import crc32c
        from tfrecord import example_pb2
    except ImportError as error:
        raise ImportError(
            f"TFRecord import needs the 'tfrecord' and 'crc32c' packages ({error}); "
            f"install them with: .venv/bin/pip install tfrecord==1.14.6 crc32c==2.9.post0"
        ) from error
    return example_pb2, crc32c


def masked_crc(data: bytes) -> int:
    """TFRecord's checksum: CRC-32C rotated right by 15 bits plus a constant."""
    _, crc32c = _dependencies()
    crc = crc32c.crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _CRC_MASK_DELTA) & 0xFFFFFFFF


@contextlib.contextmanager
def _open_records(path: str) -> Iterator[IO[bytes]]:
    from tml.common.filesystem import util as fs_util

    with fs_util.open_file(path, "rb") as stream:
        head = stream.read(2)
        stream.seek(0)
        if head != _GZIP_MAGIC:
            yield stream
            return
        with gzip.GzipFile(fileobj=stream, mode="rb") as unzipped:
            yield unzipped


def read_records(path: str) -> Iterator[bytes]:
    """The serialized records of a TFRecord file, checksums verified."""
    with _open_records(path) as stream:
        index = 0
        while True:
            header = stream.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f"{path}: record {index} is truncated (incomplete length header)")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc(header[:8]) != length_crc:
                raise ValueError(f"{path}: record {index} has a corrupt length (checksum mismatch)")
            payload = stream.read(length)
            footer = stream.read(4)
            if len(payload) < length or len(footer) < 4:
                raise ValueError(f"{path}: record {index} is truncated ({len(payload)} of {length} bytes)")
            if masked_crc(payload) != struct.unpack("<I", footer)[0]:
                raise ValueError(f"{path}: record {index} is corrupt (checksum mismatch)")
            yield payload
            index += 1


def _feature_values(example: object, feature: SegDenseFeature, where: str, fixed_length: bool) -> Optional[list]:
    entry = example.features.feature.get(feature.name)  # type: ignore[attr-defined]
    if entry is None:
        return None
    kind = entry.WhichOneof("kind")
    if kind is None:
        return None
    if kind != _PROTO_KIND[feature.dtype]:
        raise ValueError(f"{where}: feature '{feature.name}' is a {kind}; the segdense schema says {feature.dtype}")
    values = list(getattr(entry, kind).value)
    if fixed_length and len(values) != feature.length:
        raise ValueError(
            f"{where}: feature '{feature.name}' has {len(values)} values; expected length {feature.length}"
        )
    return values


def examples_to_columns(records: Sequence[bytes], features: Sequence[SegDenseFeature], source: str) -> dict:
    """Columns keyed by segdense name, in the shapes the Parquet writer takes."""
    import numpy as np

    from tml.projects.home.recap.data.arrow_columns import JaggedColumn
    from tml.projects.home.recap.data.segdense import VARIABLE_LENGTH

    example_pb2, _ = _dependencies()
    rows = len(records)
    columns: dict[str, object] = {}
    fixed = [f for f in features if f.length != VARIABLE_LENGTH]
    for feature in fixed:
        shape = (rows,) if feature.length == 1 else (rows, feature.length)
        columns[feature.name] = (
            np.full(shape, b"", dtype=object) if feature.dtype == "bytes_list" else np.zeros(shape, feature.numpy_dtype)
        )
    jagged: dict[str, list] = {f.name: [] for f in features if f.length == VARIABLE_LENGTH}
    for row, record in enumerate(records):
        example = example_pb2.Example()
        example.ParseFromString(record)
        where = f"{source}, example {row}"
        for feature in fixed:
            values = _feature_values(example, feature, where, fixed_length=True)
            if values is not None:
                columns[feature.name][row] = values[0] if feature.length == 1 else values  # type: ignore[index]
        for feature in features:
            if feature.length == VARIABLE_LENGTH:
                jagged[feature.name].append(_feature_values(example, feature, where, fixed_length=False) or [])
    for feature in features:
        if feature.length == VARIABLE_LENGTH:
            lists = jagged[feature.name]
            offsets = np.concatenate([[0], np.cumsum([len(values) for values in lists])]).astype(np.int64)
            flat = [value for values in lists for value in values]
            columns[feature.name] = JaggedColumn(np.asarray(flat, dtype=feature.numpy_dtype), offsets)
    return columns


def parquet_name(tfrecord_path: str) -> str:
    name = posixpath.basename(tfrecord_path)
    stripped = True
    while stripped:
        stripped = False
        for suffix in _STRIPPED_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name, stripped = name[: -len(suffix)], True
    return name + ".parquet"


def convert_file(
    tfrecord_path: str, output_path: str, features: Sequence[SegDenseFeature], rows_per_row_group: int = 1024
) -> int:
    """Converts one file; returns the number of examples."""
    from tml.projects.home.recap.data.parquet_writer import SegDenseParquetWriter

    with SegDenseParquetWriter(output_path, features) as writer:
        pending: list[bytes] = []
        for record in read_records(tfrecord_path):
            pending.append(record)
            if len(pending) == rows_per_row_group:
                writer.write(examples_to_columns(pending, features, tfrecord_path))
                pending = []
        if pending or writer.rows == 0:
            writer.write(examples_to_columns(pending, features, tfrecord_path))
        return writer.rows


def convert_tfrecords(
    inputs: Sequence[str],
    schema_path: str,
    output_dir: str,
    feature_names: Optional[Sequence[str]] = None,
    rows_per_row_group: int = 1024,
) -> list[str]:
    """Converts every file matched by `inputs` (paths or globs); returns the Parquet paths."""
    from tml.common.filesystem import util as fs_util
    from tml.projects.home.recap.data.segdense import load_segdense_schema

    schema = load_segdense_schema(schema_path)
    unknown = [name for name in feature_names or () if name not in schema]
    if unknown:
        raise ValueError(f"features {unknown} are not in segdense schema {schema_path}")
    features = [schema[name] for name in feature_names] if feature_names else list(schema.values())
    paths: list[str] = []
    for pattern in inputs:
        matched = fs_util.glob(pattern)
        if not matched:
            raise ValueError(f"no TFRecord files match '{pattern}'")
        paths.extend(matched)
    fs_util.infer_fs(output_dir).makedirs(output_dir, exist_ok=True)
    outputs = []
    for path in paths:
        output = posixpath.join(output_dir, parquet_name(path))
        rows = convert_file(path, output, features, rows_per_row_group)
        logging.info(f"{path}: {rows} examples -> {output}")
        outputs.append(output)
    return outputs


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("Convert TFRecord files of tf.Example to segdense Parquet.", config="none")
    parser.add_argument("inputs", nargs="+", help="TFRecord files or globs (local or fsspec URLs).")
    parser.add_argument("--schema_path", required=True, help="segdense JSON schema.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--feature", action="append", dest="features", help="Only this feature (repeatable).")
    parser.add_argument("--rows_per_row_group", type=int, default=1024)
    return parser


def run(args: argparse.Namespace) -> int:
    convert_tfrecords(args.inputs, args.schema_path, args.output_dir, args.features, args.rows_per_row_group)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
