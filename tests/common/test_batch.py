import dataclasses
from typing import Optional

import pyarrow as pa
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.common.batch import DataclassBatch, DictionaryBatch


@dataclasses.dataclass
class RankingBatch(DataclassBatch):
    dense: torch.Tensor = None
    labels: torch.Tensor = None
    ids: KeyedJaggedTensor = None
    weights: Optional[torch.Tensor] = None


def make_ids() -> KeyedJaggedTensor:
    # Two rows; feature "a" has ids [1, 2] and [3], feature "b" has [] and [4].
    return KeyedJaggedTensor.from_lengths_sync(
        keys=["a", "b"], values=torch.tensor([1, 2, 3, 4]), lengths=torch.tensor([2, 1, 0, 1])
    )


def make_batch() -> RankingBatch:
    return RankingBatch(
        dense=torch.arange(6, dtype=torch.float32).reshape(2, 3),
        labels=torch.tensor([1.0, 0.0]),
        ids=make_ids(),
    )


class StreamRecorder:
    """Stands in for a tensor living on an accelerator (torch.device("cuda") needs no GPU to exist)."""

    def __init__(self, device: str) -> None:
        self.device = torch.device(device)
        self.streams = []

    def record_stream(self, stream) -> None:
        self.streams.append(stream)


def test_as_dict_and_feature_names_follow_declaration_order():
    batch = make_batch()
    assert RankingBatch.feature_names() == ["dense", "labels", "ids", "weights"]
    as_dict = batch.as_dict()
    assert list(as_dict) == ["dense", "labels", "ids", "weights"]
    assert as_dict["dense"] is batch.dense and as_dict["ids"] is batch.ids and as_dict["weights"] is None


def test_to_returns_a_new_batch_with_every_field_moved():
    batch = make_batch()
    moved = batch.to(torch.device("meta"), non_blocking=True)
    assert type(moved) is RankingBatch and moved is not batch
    assert moved.dense.device.type == "meta" and moved.labels.device.type == "meta"
    assert moved.ids.device().type == "meta" and moved.ids.keys() == ["a", "b"]
    assert moved.weights is None
    assert batch.dense.device.type == "cpu"  # the original is untouched


def test_to_same_device_keeps_values():
    batch = make_batch()
    copy = batch.to(torch.device("cpu"))
    assert torch.equal(copy.dense, batch.dense) and torch.equal(copy.labels, batch.labels)
    assert torch.equal(copy.ids.values(), torch.tensor([1, 2, 3, 4]))
    assert copy.ids.length_per_key() == [3, 1]
    assert copy is batch  # nothing to move: no jagged tensor is rebuilt (as Tensor.to returns self)


def test_record_stream_skips_host_tensors():
    # torch raises NotImplementedError for record_stream on CPU tensors; a CPU batch must not.
    make_batch().record_stream(torch.cpu.current_stream())


def test_record_stream_reaches_accelerator_fields_only():
    on_gpu, on_cpu = StreamRecorder("cuda:0"), StreamRecorder("cpu")
    batch = RankingBatch(dense=on_gpu, labels=on_cpu)
    stream = object()
    batch.record_stream(stream)
    assert on_gpu.streams == [stream] and on_cpu.streams == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_pin_memory_without_accelerator_returns_the_batch_unchanged():
    batch = make_batch()
    assert batch.pin_memory() is batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pin_memory_pins_every_field():
    pinned = make_batch().pin_memory()
    assert pinned.dense.is_pinned() and pinned.labels.is_pinned() and pinned.ids.values().is_pinned()
    assert pinned.weights is None


def test_batch_size_is_dim_zero_of_the_first_tensor_then_jagged_stride():
    assert make_batch().batch_size == 2
    assert RankingBatch(labels=torch.zeros(5, 2)).batch_size == 5
    assert RankingBatch(ids=make_ids()).batch_size == 2
    with pytest.raises(ValueError, match="RankingBatch has no tensor to take a batch size from"):
        RankingBatch().batch_size


def test_repr_is_short_and_shows_shapes_and_jagged_lengths():
    text = repr(make_batch().to(torch.device("cpu")))
    assert text == (
        "RankingBatch(dense=Tensor(2, 3):float32, labels=Tensor(2,):float32, "
        "ids=KeyedJaggedTensor(keys=['a', 'b'], length_per_key=[3, 1]), weights=None)"
    )


def test_repr_stays_short_for_subclasses_of_subclasses():
    @dataclasses.dataclass
    class WithExtra(RankingBatch):
        extra: torch.Tensor = None

    assert repr(WithExtra(extra=torch.zeros(4, 1000))).endswith("extra=Tensor(4, 1000):float32)")


def test_from_schema_builds_a_class_with_one_optional_field_per_column():
    schema = pa.schema([("label", pa.int64()), ("score", pa.float32()), ("text", pa.string())])
    cls = DataclassBatch.from_schema("ParquetBatch", schema)
    assert cls.__name__ == "ParquetBatch" and issubclass(cls, DataclassBatch)
    assert cls.feature_names() == ["label", "score", "text"]
    empty = cls()
    assert empty.as_dict() == {"label": None, "score": None, "text": None}
    batch = cls(label=torch.tensor([3, 4, 5]), score=torch.ones(3))
    assert batch.batch_size == 3
    assert repr(batch) == "ParquetBatch(label=Tensor(3,):int64, score=Tensor(3,):float32, text=None)"


def test_from_fields_keeps_the_given_types_and_moves_like_any_batch():
    cls = DataclassBatch.from_fields("Pair", {"x": torch.Tensor, "ids": KeyedJaggedTensor})
    assert [f.type for f in dataclasses.fields(cls)] == [Optional[torch.Tensor], Optional[KeyedJaggedTensor]]
    moved = cls(x=torch.ones(2), ids=make_ids()).to(torch.device("meta"))
    assert type(moved) is cls and moved.x.device.type == "meta" and moved.ids.device().type == "meta"


def test_dictionary_batch():
    batch = DictionaryBatch(labels=torch.zeros(4), ids=make_ids())
    assert batch.batch_size == 4
    moved = batch.to(torch.device("meta"))
    assert isinstance(moved, DictionaryBatch) and set(moved) == {"labels", "ids"}
    assert moved["labels"].device.type == "meta"
    assert repr(batch) == (
        "DictionaryBatch(labels=Tensor(4,):float32, ids=KeyedJaggedTensor(keys=['a', 'b'], length_per_key=[3, 1]))"
    )
    batch.record_stream(torch.cpu.current_stream())


class TinyRanker(torch.nn.Module):
    """Sums each row's ids' embeddings, adds the dense features, and scores with BCE."""

    def __init__(self) -> None:
        super().__init__()
        import torchrec

        tables = [
            torchrec.EmbeddingBagConfig(name=f"t_{key}", embedding_dim=4, num_embeddings=8, feature_names=[key])
            for key in ("a", "b")
        ]
        self.ebc = torchrec.EmbeddingBagCollection(tables=tables, device=torch.device("cpu"))
        self.head = torch.nn.Linear(4 + 4 + 3, 1)

    def forward(self, batch: RankingBatch):
        pooled = self.ebc(batch.ids).to_dict()
        logits = self.head(torch.cat([pooled["a"], pooled["b"], batch.dense], dim=1)).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
        return loss, logits.detach()


def test_batches_flow_through_torchrec_train_pipeline_base():
    from torchrec.distributed.train_pipeline import TrainPipelineBase

    torch.manual_seed(0)
    model = TinyRanker()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    pipeline = TrainPipelineBase(model=model, optimizer=optimizer, device=torch.device("cpu"))
    batch = make_batch()
    with torch.no_grad():
        first_loss = model(batch)[0].item()
    batches = iter([batch] * 20)
    outputs = []
    while True:
        try:
            outputs.append(pipeline.progress(batches))
        except StopIteration:
            break
    assert len(outputs) == 20 and all(out.shape == (2,) for out in outputs)
    with torch.no_grad():
        assert model(batch)[0].item() < first_loss / 2
