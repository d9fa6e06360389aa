"""tf.Example records to numpy columns, one vectorised decode per feature and chunk.

protobuf parses each record (in C); every float/int64 list is then taken as its packed wire bytes
(re-serialised in C, no Python list of values) and a whole chunk's bytes of one feature are decoded
at once: floats with `frombuffer`, int64 varints with a few numpy passes. Python touches each
(example, feature) pair once, never each value. Same results and errors as
`tfrecord_import.examples_to_columns` (absent feature -> default 0 / 0.0 / b"").
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from tml.projects.home.recap.data.arrow_columns import Column, JaggedColumn
from tml.projects.home.recap.data.segdense import VARIABLE_LENGTH, SegDenseFeature

_KIND = {"float_list": "float_list", "int64_list": "int64_list", "bytes_list": "bytes_list"}


def _body(packed: bytes) -> bytes:
    """The values' bytes of a serialized FloatList/Int64List: field 1, packed (tag, varint length)."""
    if not packed:
        return b""
    position = 1
    while packed[position] & 0x80:
        position += 1
    return packed[position + 1:]


def decode_varints(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(int64 values, end flag per byte) of concatenated base-128 varints (two's complement int64)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    ends = (raw & 0x80) == 0
    if not ends[-1]:
        raise ValueError("a varint is cut short")
    starts = np.flatnonzero(np.concatenate([[True], ends[:-1]]))
    value_of_byte = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, raw.size)))
    shift = (np.arange(raw.size) - starts[value_of_byte]).astype(np.uint64) * np.uint64(7)
    parts = (raw & 0x7F).astype(np.uint64) << shift
    return np.add.reduceat(parts, starts).view(np.int64), ends


def _numeric(bodies: list[bytes], feature: SegDenseFeature, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(all values, values per row) of one numeric feature over a chunk."""
    joined = b"".join(bodies)
    sizes = np.fromiter((len(body) for body in bodies), dtype=np.int64, count=len(bodies))
    if feature.dtype == "float_list":
        return np.frombuffer(joined, dtype="<f4").astype(np.float32, copy=False), sizes // 4
    try:
        values, ends = decode_varints(joined)
    except ValueError as error:
        raise ValueError(f"{source}: feature '{feature.name}': {error}") from None
    ends_before = np.concatenate([[0], np.cumsum(ends)])
    row_ends = np.cumsum(sizes)
    return values, ends_before[row_ends] - ends_before[row_ends - sizes]


def _fixed(values: np.ndarray, counts: np.ndarray, feature: SegDenseFeature, source: str) -> np.ndarray:
    rows, length = len(counts), feature.length
    wrong = np.flatnonzero((counts != length) & (counts != 0))
    if len(wrong):
        row = int(wrong[0])
        raise ValueError(
            f"{source}, example {row}: feature '{feature.name}' has {int(counts[row])} values; "
            f"expected length {length}"
        )
    if len(values) == rows * length:
        matrix = values.reshape(rows, length)
    else:  # some examples lack the feature: they keep the default 0
        matrix = np.zeros((rows, length), dtype=feature.numpy_dtype)
        matrix[counts == length] = values.reshape(-1, length)
    return matrix.reshape(rows) if length == 1 else matrix


def _bytes_column(lists: list[list[bytes]], feature: SegDenseFeature, source: str) -> Column:
    if feature.length == VARIABLE_LENGTH:
        offsets = np.concatenate([[0], np.cumsum([len(values) for values in lists])]).astype(np.int64)
        return JaggedColumn(np.array([v for values in lists for v in values], dtype=object), offsets)
    shape = (len(lists),) if feature.length == 1 else (len(lists), feature.length)
    column = np.full(shape, b"", dtype=object)
    for row, values in enumerate(lists):
        if values and len(values) != feature.length:
            raise ValueError(
                f"{source}, example {row}: feature '{feature.name}' has {len(values)} values; "
                f"expected length {feature.length}"
            )
        if values:
            column[row] = values[0] if feature.length == 1 else values
    return column


def decode_examples(records: Sequence[bytes], features: Sequence[SegDenseFeature], source: str) -> dict[str, Column]:
    """Columns keyed by segdense name, shaped as the Parquet reader's."""
    from tfrecord import example_pb2

    parts: dict[str, list] = {feature.name: [] for feature in features}
    example = example_pb2.Example()
    for row, record in enumerate(records):
        example.ParseFromString(record)
        entries = example.features.feature
        for feature in features:
            entry = entries.get(feature.name)
            kind = entry.WhichOneof("kind") if entry is not None else None
            if kind is not None and kind != _KIND[feature.dtype]:
                raise ValueError(
                    f"{source}, example {row}: feature '{feature.name}' is a {kind}; the segdense schema "
                    f"says {feature.dtype}"
                )
            if feature.dtype == "bytes_list":
                parts[feature.name].append(list(entry.bytes_list.value) if kind else [])
            else:
                parts[feature.name].append(_body(getattr(entry, kind).SerializeToString()) if kind else b"")
    columns: dict[str, Column] = {}
    for feature in features:
        if feature.dtype == "bytes_list":
            columns[feature.name] = _bytes_column(parts[feature.name], feature, source)
            continue
        values, counts = _numeric(parts[feature.name], feature, source)
        if feature.length == VARIABLE_LENGTH:
            offsets = np.zeros(len(counts) + 1, dtype=np.int64)
            np.cumsum(counts, out=offsets[1:])
            columns[feature.name] = JaggedColumn(values, offsets)
        else:
            columns[feature.name] = _fixed(values, counts, feature, source)
    return columns
