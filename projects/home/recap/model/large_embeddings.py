"""Large embedding tables in a torchrec EmbeddingBagCollection, shardable by DistributedModelParallel.

Each table pools (sums) the ids of one sparse feature of the same name in the batch's
KeyedJaggedTensor `sparse_features`. Outputs are concatenated BY TABLE NAME in config order: a sharded
collection returns its features in a plan-dependent order, so taking them by position would make the
model compute a different function under a different sharding plan.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig as TorchrecEmbeddingBagConfig
from torchrec.modules.embedding_configs import PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.embedding.config import LargeEmbeddingsConfig
from tml.projects.home.recap.model.tracing import is_tracing


class LargeEmbeddings(nn.Module):
    """`forward(sparse_features) -> [B, sum(embedding_dim)]`; build on "meta" to shard later."""

    def __init__(self, config: LargeEmbeddingsConfig, device: Optional[torch.device] = None) -> None:
        super().__init__()
        names = [table.name for table in config.tables]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"large_embeddings tables must have unique names; repeated: {duplicates}.")
        if not names:
            raise ValueError("large_embeddings needs at least one table.")
        self.feature_names = names
        for table in config.tables:
            if table.pretrained is not None or table.vocab is not None:
                logging.warning(
                    f"large embedding table '{table.name}': `pretrained` and `vocab` are not applied by the "
                    f"model; load pretrained rows from a checkpoint and map ids to rows in the data pipeline."
                )
        tables = [
            TorchrecEmbeddingBagConfig(
                name=table.name,
                embedding_dim=table.embedding_dim,
                num_embeddings=table.num_embeddings,
                feature_names=[table.name],
                pooling=PoolingType.SUM,
            )
            for table in config.tables
        ]
        self.ebc = EmbeddingBagCollection(tables=tables, device=device)
        self.out_features = sum(table.embedding_dim for table in config.tables)

    def forward(self, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        missing = [] if is_tracing() else [n for n in self.feature_names if n not in sparse_features.keys()]
        if missing:
            raise ValueError(
                f"sparse_features lacks the feature(s) {missing} that large embedding tables of the same "
                f"name read; it has {sparse_features.keys()}."
            )
        pooled = self.ebc(sparse_features).to_dict()
        return torch.cat([pooled[name] for name in self.feature_names], dim=1)
