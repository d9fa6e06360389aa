"""A small sharded ranking model and deterministic data for training-loop tests and benchmarks.

Two embedding tables (torchrec EmbeddingBagCollection) plus dense features feed an MLP; the label
is a fixed function of the ids and the dense features, so the model can learn it.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Iterator, Optional

import torch
import torchrec
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.common.batch import DataclassBatch

FEATURES = ("user", "item")
NUM_IDS = 64
EMBEDDING_DIM = 8
DENSE_DIM = 4


@dataclasses.dataclass
class LoopBatch(DataclassBatch):
    dense: torch.Tensor = None
    sparse: KeyedJaggedTensor = None
    labels: torch.Tensor = None


class TinyRanker(torch.nn.Module):
    def __init__(self, device: torch.device = torch.device("cpu"), batch_norm: bool = False) -> None:
        super().__init__()
        tables = [
            torchrec.EmbeddingBagConfig(
                name=f"t_{name}", embedding_dim=EMBEDDING_DIM, num_embeddings=NUM_IDS, feature_names=[name]
            )
            for name in FEATURES
        ]
        self.ebc = torchrec.EmbeddingBagCollection(tables=tables, device=device)
        width = len(FEATURES) * EMBEDDING_DIM + DENSE_DIM
        self.mlp = torch.nn.Sequential(
            *([torch.nn.BatchNorm1d(width, device=device)] if batch_norm else []),
            torch.nn.Linear(width, 16, device=device),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.1),
            torch.nn.Linear(16, 1, device=device),
        )

    def forward(self, batch: LoopBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pooled = self.ebc(batch.sparse).to_dict()
        features = torch.cat([pooled[name] for name in FEATURES] + [batch.dense], dim=1)
        logits = self.mlp(features).squeeze(-1)
        labels = batch.labels.float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        probabilities = torch.sigmoid(logits)
        return loss, {
            "logits": logits.unsqueeze(1).detach(),
            "probabilities": probabilities.unsqueeze(1).detach(),
            "labels": labels.unsqueeze(1),
            "weights": torch.ones_like(labels).unsqueeze(1),
        }


def make_batch(index: int, batch_size: int, seed: int = 0) -> LoopBatch:
    """Batch `index` of a fixed stream: the same index always gives the same batch."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
    ids = torch.randint(0, NUM_IDS, (len(FEATURES), batch_size), generator=generator)
    dense = torch.randn(batch_size, DENSE_DIM, generator=generator)
    signal = ((ids[0] % 2) == (ids[1] % 3 == 0)).float() + 0.5 * dense[:, 0]
    labels = (signal > 0.5).long()
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=list(FEATURES),
        values=ids.reshape(-1),
        lengths=torch.ones(len(FEATURES) * batch_size, dtype=torch.int64),
    )
    return LoopBatch(dense=dense, sparse=sparse, labels=labels)


class StreamDataset:
    """Rank `rank` of `world_size` reads every world_size-th batch of the fixed stream."""

    def __init__(
        self,
        batch_size: int,
        num_batches: Optional[int] = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        seconds_per_batch: float = 0.0,
    ) -> None:
        self.batch_size, self.num_batches, self.seed = batch_size, num_batches, seed
        self.rank, self.world_size, self.seconds_per_batch = rank, world_size, seconds_per_batch

    def __iter__(self) -> Iterator[LoopBatch]:
        index = self.rank
        while self.num_batches is None or index < self.num_batches:
            if self.seconds_per_batch:
                time.sleep(self.seconds_per_batch)
            yield make_batch(index, self.batch_size, self.seed)
            index += self.world_size


def build_trainable(
    device: torch.device = torch.device("cpu"),
    seed: int = 0,
    embedding_lr: float = 0.1,
    dense_lr: float = 0.01,
    sharding: Optional[dict] = None,
    batch_norm: bool = False,
):
    """A sharded TinyRanker with a fused Adagrad on its tables and Adam on the rest.

    Needs an initialised process group. Returns (model, optimizer).
    """
    from tml.common.sharding import maybe_shard_model, quiet_torchrec_warnings
    from tml.core.optimizers import DenseGroup, LearningRate, apply_embedding_optimizers, build_combined_optimizer, dense_parameters
    from tml.core.optimizers.config import EmbeddingOptimizerConfig, FusedAdagradConfig

    quiet_torchrec_warnings()
    torch.manual_seed(seed)
    model = TinyRanker(device=torch.device("meta"), batch_norm=batch_norm)
    tables = {table.name: EmbeddingOptimizerConfig(adagrad=FusedAdagradConfig(lr=embedding_lr))
              for table in model.ebc.embedding_bag_configs()}
    apply_embedding_optimizers(model, tables)
    sharded = maybe_shard_model(model, device, sharding_constraints=sharding)
    adam = DenseGroup(dense_parameters(sharded), lambda params: torch.optim.Adam(params, lr=dense_lr), LearningRate(constant=dense_lr))
    optimizer, _ = build_combined_optimizer(sharded, {"dense_opt": adam}, tables, fused_first=True)
    return sharded, optimizer
