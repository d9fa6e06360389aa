"""Embedding sections of the Heavy Ranker's model config: large (torchrec) and small (dense) tables."""

from __future__ import annotations

from typing import List, Optional

from pydantic import Field, NonNegativeInt, PositiveInt, field_validator

from tml.core.config import BaseConfig
from tml.core.optimizers.config import LearningRate, LearningRateValue


class EmbeddingSnapshot(BaseConfig):
    """Where a pretrained table comes from (e.g. a TwHIN checkpoint)."""

    emb_name: str = Field(..., description="Name of the table inside the loaded checkpoint.")
    embedding_snapshot_uri: str = Field(..., description="Path of the checkpoint holding the table.")


class EmbeddingBagConfig(BaseConfig):
    """One large table. Its single feature in the batch's KeyedJaggedTensor has the table's name."""

    name: str = Field(..., description="Table name; also the sparse feature key it pools.")
    num_embeddings: PositiveInt = Field(..., description="Rows (vocabulary size).")
    embedding_dim: PositiveInt = Field(
        ..., description="Width of a row. Sharded (fused-kernel) tables need a multiple of 4."
    )
    pretrained: Optional[EmbeddingSnapshot] = Field(None, description="Initial values from a checkpoint.")
    vocab: Optional[str] = Field(
        None, description="Directory of parquet files mapping entity ids to row indices."
    )

    @field_validator("embedding_dim")
    @classmethod
    def _fits_fused_kernel(cls, dim: int) -> int:
        if dim % 4:
            raise ValueError(
                f"embedding_dim must be a multiple of 4 (FBGEMM's fused embedding kernels need it), got {dim}; "
                f"use {dim - dim % 4 or 4} or {dim + 4 - dim % 4}."
            )
        return dim


class EmbeddingOptimizerConfig(BaseConfig):
    """SGD for the large tables, fused into the backward pass when the tables are sharded."""

    learning_rate: Optional[LearningRate] = Field(
        None, description="Schedule of the embedding LR; None keeps init_learning_rate constant."
    )
    init_learning_rate: LearningRateValue = Field(..., description="LR the fused optimizer is created with.")


class LargeEmbeddingsConfig(BaseConfig):
    """Tables looked up from `sparse_features`; outputs are concatenated in the order listed here."""

    tables: List[EmbeddingBagConfig] = Field(..., description="The tables, in model-input order.")
    optimizer: EmbeddingOptimizerConfig
    tables_to_log: Optional[List[str]] = Field(None, description="Tables whose norms are logged.")


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
