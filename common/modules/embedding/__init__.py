"""Large embedding tables (torchrec EmbeddingBagCollection) and their configs."""
from tml.common.modules.embedding.config import (
    DataType,
    EmbeddingBagConfig,
    EmbeddingSnapshot,
    LargeEmbeddingsConfig,
)
from tml.common.modules.embedding.embedding import LargeEmbeddings, concat_by_feature

__all__ = [
    "DataType",
    "EmbeddingBagConfig",
    "EmbeddingSnapshot",
    "LargeEmbeddings",
    "LargeEmbeddingsConfig",
    "concat_by_feature",
]
