"""`LargeEmbeddings`: a model's large embedding tables in one torchrec EmbeddingBagCollection.

One feature per table, of the table's name, sum-pooled. Built on the meta device so that
DistributedModelParallel allocates each table only where torchrec's planner places it. Give the
tables their optimizers with `tml.core.optimizers.apply_embedding_optimizers` before sharding.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig as TorchrecEmbeddingBagConfig
from torchrec.modules.embedding_configs import PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor
from torchrec.types import DataType as TorchrecDataType

from tml.common.modules.embedding.config import DataType, EmbeddingBagConfig, LargeEmbeddingsConfig
from tml.common.tracing import is_tracing
from tml.ml_logging.torch_logging import logging

_DATA_TYPES = {DataType.FP32: TorchrecDataType.FP32, DataType.FP16: TorchrecDataType.FP16}


def _torchrec_table(table: EmbeddingBagConfig) -> TorchrecEmbeddingBagConfig:
    return TorchrecEmbeddingBagConfig(
        name=table.name,
        num_embeddings=table.num_embeddings,
        embedding_dim=table.embedding_dim,
        feature_names=[table.name],
        pooling=PoolingType.SUM,
        data_type=_DATA_TYPES[table.data_type],
    )


class LargeEmbeddings(nn.Module):
    """`forward(sparse_features) -> KeyedTensor` of pooled embeddings, `pooled_embeddings(...)` ->
    [batch, output_dim] in table order.

    `device=None` leaves the tables on the meta device for sharding; pass a device to build a plain,
    unsharded module (evaluation, export, tests).
    """

    def __init__(
        self,
        large_embeddings_config: LargeEmbeddingsConfig,
        device: Optional[Union[str, torch.device]] = None,
    ) -> None:
        super().__init__()
        self.config = large_embeddings_config
        for table in large_embeddings_config.tables:
            if table.vocab is not None:
                logging.warning(
                    f"large embedding table '{table.name}': `vocab` is not applied by the model; map ids to "
                    f"rows in the data pipeline."
                )
        self.ebc = EmbeddingBagCollection(
            tables=[_torchrec_table(table) for table in large_embeddings_config.tables],
            device=torch.device(device if device is not None else "meta"),
        )

    @property
    def feature_names(self) -> list[str]:
        """Feature names in table order: the order of `pooled_embeddings` columns."""
        return self.config.feature_names

    @property
    def output_dim(self) -> int:
        return sum(table.embedding_dim for table in self.config.tables)

    def forward(self, sparse_features: KeyedJaggedTensor) -> KeyedTensor:
        """Pooled embeddings keyed by feature. Their order in the KeyedTensor depends on the
        sharding plan: read them by name (`to_dict()`), or use `pooled_embeddings`."""
        return self.ebc(sparse_features)

    def pooled_embeddings(self, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """[batch, output_dim]: each feature's pooled embedding, concatenated in table order (by name,
        so the result does not depend on the sharding plan)."""
        missing = [] if is_tracing() else [n for n in self.feature_names if n not in sparse_features.keys()]
        if missing:
            raise ValueError(
                f"sparse_features lacks the feature(s) {missing} that large embedding tables of the same "
                f"name read; it has {sparse_features.keys()}."
            )
        return concat_by_feature(self(sparse_features), self.feature_names)


def concat_by_feature(pooled: KeyedTensor, feature_names: list[str]) -> torch.Tensor:
    """Columns of `pooled` taken by name, so the result does not depend on the sharding plan."""
    by_name = pooled.to_dict()
    missing = [] if is_tracing() else [name for name in feature_names if name not in by_name]
    if missing:
        raise KeyError(f"pooled embeddings lack features {missing}; they have {sorted(by_name)}.")
    return torch.cat([by_name[name] for name in feature_names], dim=1)
