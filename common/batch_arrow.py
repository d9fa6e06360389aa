"""Dataclass batches <-> Arrow record batches, for sending ready batches between processes.

One Arrow row per batch, so that nothing has to be per-example: a tensor field of any shape is a
list cell of its flat values plus a `<field>/shape` cell; a KeyedJaggedTensor (any stride, e.g.
TwHIN's padded lookups) is `<field>/keys`, `<field>/lengths`, `<field>/values` and `<field>/stride`
cells; every other field (None, plain values, small dataclasses such as TwHIN's ChunkLayout) goes as
JSON in one `_values` cell. All of a batch's parts travel in its columns, since a Flight stream sends
the schema (and its metadata) once: the schema only names each tensor field's dtype. bfloat16 has no
Arrow type: it travels as its 16-bit pattern and is restored. Decoding is zero-copy where Arrow allows.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

_METADATA_KEY = b"tml.batch"
_VALUES = "_values"


def _cell(values: np.ndarray) -> pa.ListArray:
    """A one-row list column holding `values`."""
    return pa.ListArray.from_arrays(pa.array([0, len(values)], type=pa.int32()), pa.array(values))


def _tensor_columns(name: str, tensor: torch.Tensor) -> dict[str, pa.Array]:
    flat = tensor.detach().contiguous().reshape(-1)
    if tensor.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)
    return {name: _cell(flat.numpy()), f"{name}/shape": _cell(np.asarray(tensor.shape, dtype=np.int64))}


def _jagged_columns(name: str, kjt: KeyedJaggedTensor) -> dict[str, pa.Array]:
    if kjt.weights_or_none() is not None:
        raise ValueError(f"field '{name}': weighted KeyedJaggedTensors are not supported by the Arrow batch codec")
    return {
        f"{name}/keys": pa.array([list(kjt.keys())], type=pa.list_(pa.string())),
        f"{name}/lengths": _cell(kjt.lengths().to(torch.int32).numpy()),
        f"{name}/values": _cell(kjt.values().to(torch.int64).numpy()),
        f"{name}/stride": pa.array([kjt.stride()], type=pa.int64()),
    }


def _plain(value: Any) -> Any:
    """A JSON-able form of a non-tensor field (dataclasses and tuples are restored on decoding)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"dataclass": {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()},
                "tuples": [k for k, v in fields.items() if isinstance(v, tuple)]}
    if isinstance(value, tuple):
        return {"tuple": list(value)}
    return {"value": value}


def batch_to_arrow(batch: Any) -> pa.RecordBatch:
    """A dataclass batch as a one-row record batch (see the module docstring for the layout)."""
    columns: dict[str, pa.Array] = {}
    kinds: dict[str, str] = {}
    others: dict[str, Any] = {}
    for field in dataclasses.fields(batch):
        value = getattr(batch, field.name)
        if isinstance(value, KeyedJaggedTensor):
            columns.update(_jagged_columns(field.name, value))
            kinds[field.name] = "kjt"
        elif isinstance(value, torch.Tensor):
            columns.update(_tensor_columns(field.name, value))
            kinds[field.name] = str(value.dtype).removeprefix("torch.")
        else:
            others[field.name] = _plain(value)
    columns[_VALUES] = pa.array([json.dumps(others)], type=pa.string())
    record_batch = pa.RecordBatch.from_pydict(columns)
    return record_batch.replace_schema_metadata({_METADATA_KEY: json.dumps(kinds).encode()})


def _flat(record_batch: pa.RecordBatch, column: str) -> np.ndarray:
    return record_batch.column(column).flatten().to_numpy(zero_copy_only=False)


def _tensor(record_batch: pa.RecordBatch, name: str, dtype_name: str) -> torch.Tensor:
    array = _flat(record_batch, name)
    tensor = torch.from_numpy(np.array(array, copy=not array.flags.writeable))
    if dtype_name == "bfloat16":
        tensor = tensor.view(torch.bfloat16)
    return tensor.reshape([int(size) for size in _flat(record_batch, f"{name}/shape")])


def _kjt(record_batch: pa.RecordBatch, name: str) -> KeyedJaggedTensor:
    keys = record_batch.column(f"{name}/keys")[0].as_py()
    lengths = np.array(_flat(record_batch, f"{name}/lengths"), dtype=np.int32)
    values = np.array(_flat(record_batch, f"{name}/values"), dtype=np.int64)
    stride = record_batch.column(f"{name}/stride")[0].as_py()
    return KeyedJaggedTensor(keys=keys, values=torch.from_numpy(values), lengths=torch.from_numpy(lengths),
                             stride=stride)


def _dataclass_type(batch_type: type, name: str) -> type:
    annotation = typing.get_type_hints(batch_type)[name]
    candidates = [annotation, *typing.get_args(annotation)]  # Optional[X] -> X
    for candidate in candidates:
        if dataclasses.is_dataclass(candidate):
            return candidate
    raise ValueError(f"field '{name}' of {batch_type.__name__} holds a dataclass but is annotated {annotation}")


def _restore(batch_type: type, name: str, encoded: dict) -> Any:
    if "dataclass" in encoded:
        values = dict(encoded["dataclass"])
        for key in encoded["tuples"]:
            values[key] = tuple(values[key])
        return _dataclass_type(batch_type, name)(**values)
    if "tuple" in encoded:
        return tuple(encoded["tuple"])
    return encoded["value"]


def arrow_to_batch(record_batch: pa.RecordBatch, batch_type: type) -> Any:
    """The `batch_type` instance that `batch_to_arrow` encoded."""
    metadata = record_batch.schema.metadata
    if not metadata or _METADATA_KEY not in metadata or record_batch.num_rows != 1:
        raise ValueError("this Arrow record batch was not written by tml's batch codec (no tml.batch metadata)")
    values: dict[str, Any] = {}
    for name, kind in json.loads(metadata[_METADATA_KEY]).items():
        values[name] = _kjt(record_batch, name) if kind == "kjt" else _tensor(record_batch, name, kind)
    for name, encoded in json.loads(record_batch.column(_VALUES)[0].as_py()).items():
        values[name] = _restore(batch_type, name, encoded)
    return batch_type(**values)
