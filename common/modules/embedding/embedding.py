"""`LargeEmbeddings`: the sharded embedding tables of a model, one feature per table, sum-pooled."""
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
from tml.core.optimizers import apply_embedding_optimizer

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
    """One EmbeddingBagCollection built from a `LargeEmbeddingsConfig`.

    Tables are created on the meta device by default, so that sharding (DMP) materialises each one
    only on the ranks it is placed on; pass `device` to build a plain, unsharded module instead.
    """

    def __init__(
        self,
        large_embeddings_config: LargeEmbeddingsConfig,
        device: Optional[Union[str, torch.device]] = None,
    ) -> None:
        super().__init__()
        self.config = large_embeddings_config
        self.ebc = EmbeddingBagCollection(
            tables=[_torchrec_table(table) for table in large_embeddings_config.tables],
            device=torch.device(device if device is not None else "meta"),
        )
        # Serving-time model surgery replaces this module to cut the graph after the lookups.
        self.surgery_cut_point = nn.Identity()

    @property
    def feature_names(self) -> list[str]:
        """Feature names in config order: the order of `pooled_embeddings` columns."""
        return [table.name for table in self.config.tables]

    @property
    def output_dim(self) -> int:
        return sum(table.embedding_dim for table in self.config.tables)

    def apply_embedding_optimizers(self) -> None:
        """Attach each table's configured optimizer; call before sharding so it gets fused."""
        for table in self.config.tables:
            apply_embedding_optimizer(self.ebc.embedding_bags[table.name].parameters(), table.optimizer)

    def forward(self, sparse_features: KeyedJaggedTensor) -> KeyedTensor:
        """Pooled embeddings keyed by feature. Their order in the KeyedTensor depends on the
        sharding plan: read them by name (`to_dict()`), or use `pooled_embeddings`."""
        return self.surgery_cut_point(self.ebc(sparse_features))

    def pooled_embeddings(self, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        """[batch, output_dim]: each feature's pooled embedding, concatenated in config order."""
        return concat_by_feature(self(sparse_features), self.feature_names)


def concat_by_feature(pooled: KeyedTensor, feature_names: list[str]) -> torch.Tensor:
    """Columns of `pooled` taken by name, so the result does not depend on the sharding plan."""
    by_name = pooled.to_dict()
    missing = [name for name in feature_names if name not in by_name]
    if missing:
        raise KeyError(f"pooled embeddings lack features {missing}; they have {sorted(by_name)}.")
    return torch.cat([by_name[name] for name in feature_names], dim=1)
