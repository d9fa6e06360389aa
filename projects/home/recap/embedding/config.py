"""Embedding sections of the Heavy Ranker's model config: large (torchrec) and small (dense) tables."""

from __future__ import annotations

from typing import List, Optional

from pydantic import Field, NonNegativeInt, PositiveInt

from tml.common.modules.embedding.config import LargeEmbeddingsConfig
from tml.core.config import BaseConfig
from tml.core.optimizers.config import EmbeddingOptimizerConfig, FusedSgdConfig, LearningRate, LearningRateValue


class RecapEmbeddingOptimizerConfig(BaseConfig):
    """The Heavy Ranker's YAML form of the large tables' optimizer: SGD for every table.

    Translated into the one `EmbeddingOptimizerConfig` by `to_embedding_optimizer`.
    """

    learning_rate: Optional[LearningRate] = Field(
        None, description="Schedule of the embedding LR; None keeps init_learning_rate constant."
    )
    init_learning_rate: LearningRateValue = Field(..., description="LR the fused optimizer is created with.")

    def to_embedding_optimizer(self) -> EmbeddingOptimizerConfig:
        return EmbeddingOptimizerConfig(
            sgd=FusedSgdConfig(lr=self.init_learning_rate), learning_rate=self.learning_rate
        )


class RecapLargeEmbeddingsConfig(LargeEmbeddingsConfig):
    """`model.large_embeddings`: tables looked up from `sparse_features` (outputs concatenated in the
    order listed), all trained by `optimizer` unless a table names its own."""

    optimizer: RecapEmbeddingOptimizerConfig = Field(..., description="SGD (and schedule) of every table.")

    def shared_optimizer(self) -> Optional[EmbeddingOptimizerConfig]:
        return self.optimizer.to_embedding_optimizer()


class StratifierConfig(BaseConfig):
    """One stratum: the examples whose discrete-feature column `index` equals `value`. Evaluation
    reports every task's metrics again over just these examples, under `<metric>/<task>/<name>`."""

    name: str = Field(
        ...,
        pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Name the stratum is reported under (letters, digits, '_', '.', '-').",
    )
    index: NonNegativeInt = Field(..., description="Column of `discrete_features`.")
    value: int = Field(..., description="The value of the column that selects the stratum.")


class SmallEmbeddingBagConfig(BaseConfig):
    """A small dense table over one discrete-feature column (one id per example)."""

    name: str
    num_embeddings: PositiveInt = Field(..., description="Rows; ids must lie in [0, num_embeddings).")
    embedding_dim: PositiveInt
    index: NonNegativeInt = Field(..., description="Column of `discrete_features` holding the id.")


class SmallEmbeddingsConfig(BaseConfig):
    tables: List[SmallEmbeddingBagConfig] = Field(..., description="Outputs concatenated in this order.")
