"""Dataclass batches <-> Arrow record batches, for sending ready batches between processes.

One Arrow row per example. A tensor field of shape [B, *rest] becomes a fixed-size-list column of
prod(rest) values (a plain column when rest is empty); a KeyedJaggedTensor becomes one list<int64>
column per key (`<field>/<key>`); tensors that are not per-example (e.g. the [0, 0] placeholder of
an absent embedding) and non-tensor fields travel in the schema's metadata. bfloat16 has no Arrow
type: it travels as its 16-bit pattern and is restored. Decoding is zero-copy where Arrow allows.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

_METADATA_KEY = b"tml.batch"


def _array(tensor: torch.Tensor) -> pa.Array:
    flat = tensor.detach().contiguous().reshape(tensor.shape[0], -1) if tensor.dim() > 1 else tensor.detach()
    if tensor.dtype == torch.bfloat16:
        flat = flat.view(torch.int16)
    values = pa.array(flat.reshape(-1).numpy())
    if tensor.dim() <= 1:
        return values
    return pa.FixedSizeListArray.from_arrays(values, flat.shape[1])


def _jagged_arrays(kjt: KeyedJaggedTensor, rows: int) -> dict[str, pa.Array]:
    if kjt.weights_or_none() is not None:
        raise ValueError("weighted KeyedJaggedTensors are not supported by the Arrow batch codec")
    columns = {}
    for key, jagged in kjt.to_dict().items():
        lengths = jagged.lengths().to(torch.int64).numpy()
        if len(lengths) != rows:
            raise ValueError(f"sparse key '{key}' has {len(lengths)} rows; expected {rows}")
        offsets = np.zeros(rows + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        columns[key] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(jagged.values().to(torch.int64).numpy()))
    return columns


def batch_to_arrow(batch: Any) -> pa.RecordBatch:
    """A dataclass batch as one record batch (see the module docstring for the layout)."""
    rows = batch.batch_size
    columns: dict[str, pa.Array] = {}
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(batch):
        value = getattr(batch, field.name)
        if isinstance(value, KeyedJaggedTensor):
            jagged = _jagged_arrays(value, rows)
            columns.update({f"{field.name}/{key}": array for key, array in jagged.items()})
            fields[field.name] = {"kind": "kjt", "keys": list(jagged), "stride": rows}
        elif isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == rows and value.numel():
            columns[field.name] = _array(value)
            fields[field.name] = {"kind": "tensor", "dtype": str(value.dtype).removeprefix("torch."),
                                  "shape": list(value.shape[1:])}
        elif isinstance(value, torch.Tensor):
            fields[field.name] = {"kind": "constant", "dtype": str(value.dtype).removeprefix("torch."),
                                  "shape": list(value.shape), "values": value.reshape(-1).tolist()}
        elif value is None:
            fields[field.name] = {"kind": "none"}
        else:
            fields[field.name] = {"kind": "json", "value": list(value) if isinstance(value, tuple) else value,
                                  "tuple": isinstance(value, tuple)}
    record_batch = pa.RecordBatch.from_pydict(columns) if columns else pa.RecordBatch.from_pydict({})
    metadata = {_METADATA_KEY: json.dumps({"rows": rows, "fields": fields}).encode()}
    return record_batch.replace_schema_metadata(metadata)


def _tensor(column: pa.Array, dtype_name: str, shape: list[int]) -> torch.Tensor:
    values = column.flatten() if pa.types.is_fixed_size_list(column.type) else column
    array = values.to_numpy(zero_copy_only=False)
    tensor = torch.from_numpy(np.array(array, copy=not array.flags.writeable))
    if dtype_name == "bfloat16":
        tensor = tensor.view(torch.bfloat16)
    return tensor.reshape(len(column), *shape)


def _kjt(record_batch: pa.RecordBatch, name: str, keys: list[str], stride: int) -> KeyedJaggedTensor:
    values, lengths = [], []
    for key in keys:
        column = record_batch.column(f"{name}/{key}")
        lengths.append(pa.compute.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int32))
        values.append(column.flatten().to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
    if not keys:
        return KeyedJaggedTensor(keys=[], values=torch.empty(0, dtype=torch.int64),
                                 lengths=torch.empty(0, dtype=torch.int32), stride=stride)
    return KeyedJaggedTensor(keys=keys, values=torch.from_numpy(np.concatenate(values)),
                             lengths=torch.from_numpy(np.concatenate(lengths)), stride=stride)


def arrow_to_batch(record_batch: pa.RecordBatch, batch_type: type) -> Any:
    """The `batch_type` instance that `batch_to_arrow` encoded."""
    import pyarrow.compute  # noqa: F401  (pa.compute)

    metadata: Optional[dict] = record_batch.schema.metadata
    if not metadata or _METADATA_KEY not in metadata:
        raise ValueError("this Arrow record batch was not written by tml's batch codec (no tml.batch metadata)")
    layout = json.loads(metadata[_METADATA_KEY])
    values: dict[str, Any] = {}
    for name, spec in layout["fields"].items():
        kind = spec["kind"]
        if kind == "tensor":
            values[name] = _tensor(record_batch.column(name), spec["dtype"], spec["shape"])
        elif kind == "kjt":
            values[name] = _kjt(record_batch, name, spec["keys"], spec["stride"])
        elif kind == "constant":
            values[name] = torch.tensor(spec["values"], dtype=getattr(torch, spec["dtype"])).reshape(spec["shape"])
        elif kind == "none":
            values[name] = None
        else:
            values[name] = tuple(spec["value"]) if spec["tuple"] else spec["value"]
    return batch_type(**values)
