"""The Arrow batch codec: what a remote reader sends is the batch the trainer gets, field by field."""
from __future__ import annotations

import dataclasses
from typing import Optional

import pyarrow as pa
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.common.batch import DataclassBatch
from tml.common.batch_arrow import arrow_to_batch, batch_to_arrow


@dataclasses.dataclass(frozen=True)
class Shape:
    names: tuple[str, ...]
    size: int


@dataclasses.dataclass
class MixedBatch(DataclassBatch):
    dense: torch.Tensor = None
    half: torch.Tensor = None
    empty: torch.Tensor = None
    sparse: KeyedJaggedTensor = None
    missing: Optional[torch.Tensor] = None
    names: tuple = ()
    shape: Optional[Shape] = None


def _stream(batches: list) -> list:
    """Through an Arrow IPC stream, as Flight sends them (one schema message, then the batches)."""
    encoded = [batch_to_arrow(batch) for batch in batches]
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, encoded[0].schema) as writer:
        for record_batch in encoded:
            writer.write_batch(record_batch)
    return list(pa.ipc.open_stream(sink.getvalue()))


def test_every_kind_of_field_comes_back_equal_even_when_it_changes_between_batches():
    batches = []
    for index, stride in enumerate((3, 5)):  # the jagged stride need not be the dense batch size
        batches.append(MixedBatch(
            dense=torch.arange(12, dtype=torch.float32).reshape(2, 3, 2) + index,
            half=torch.tensor([[1.5, -2.25]], dtype=torch.bfloat16).expand(2, 2).contiguous(),
            empty=torch.zeros(0, 0),
            sparse=KeyedJaggedTensor(keys=["a", "b"], values=torch.arange(4 + index),
                                     lengths=torch.tensor([1, 0, 2] + [0] * (2 * stride - 4) + [1 + index]),
                                     stride=stride),
            names=("x", f"y{index}"),
            shape=Shape(("u", "v"), size=index),
        ))
    for sent, received in zip(batches, _stream(batches)):
        got = arrow_to_batch(received, MixedBatch)
        for name in ("dense", "half", "empty"):
            value = getattr(got, name)
            assert value.dtype == getattr(sent, name).dtype and torch.equal(value, getattr(sent, name)), name
        assert got.sparse.keys() == ["a", "b"] and got.sparse.stride() == sent.sparse.stride()
        assert torch.equal(got.sparse.lengths(), sent.sparse.lengths().int())
        assert torch.equal(got.sparse.values(), sent.sparse.values())
        assert got.missing is None and got.names == sent.names and got.shape == sent.shape
        assert isinstance(got.shape.names, tuple)  # hashable again, like the original


def test_a_foreign_record_batch_is_refused():
    with pytest.raises(ValueError, match="not written by tml's batch codec"):
        arrow_to_batch(pa.RecordBatch.from_pydict({"x": [1, 2]}), MixedBatch)


def test_weighted_jagged_tensors_are_refused_naming_the_field():
    weighted = KeyedJaggedTensor(keys=["a"], values=torch.arange(2), lengths=torch.tensor([2]),
                                 weights=torch.ones(2))
    with pytest.raises(ValueError, match="field 'sparse': weighted"):
        batch_to_arrow(MixedBatch(dense=torch.zeros(1), sparse=weighted))
