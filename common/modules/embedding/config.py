"""Configs of large (sharded) embedding tables: the one schema both projects' YAML translate into.

TwHIN's YAML gives each table its own `optimizer` and `data_type` (as the original's did); the Heavy
Ranker's gives one optimizer for all tables (`RecapLargeEmbeddingsConfig` supplies it through
`shared_optimizer`) and no data type (fp32).
"""
from __future__ import annotations

import enum
from typing import List, Optional

from pydantic import Field, PositiveInt, field_validator, model_validator

from tml.core.config import BaseConfig
from tml.core.optimizers.config import EmbeddingOptimizerConfig


class DataType(str, enum.Enum):
    """Storage type of an embedding table's weights."""

    FP32 = "fp32"
    FP16 = "fp16"


class EmbeddingSnapshot(BaseConfig):
    """Where a pretrained table's weights live (kept from the original, which never loaded them)."""

    emb_name: str = Field(description="Name of the table inside the snapshot.")
    embedding_snapshot_uri: str = Field(description="Path or URL of the snapshot to read it from.")


class EmbeddingBagConfig(BaseConfig):
    """One embedding table, looked up by one feature of the same name and sum-pooled."""

    name: str = Field(description="Table name; also the name of the feature (KJT key) it embeds.")
    num_embeddings: PositiveInt = Field(description="Number of rows (vocabulary size).")
    embedding_dim: PositiveInt = Field(
        description="Width of each row. Must be divisible by 4 for the fused (sharded) kernels."
    )
    pretrained: Optional[EmbeddingSnapshot] = Field(None, description="Initial weights, if any.")
    vocab: Optional[str] = Field(None, description="Path of the vocabulary mapping ids to rows, if any.")
    optimizer: Optional[EmbeddingOptimizerConfig] = Field(
        None,
        description="Optimizer fused into the embedding kernel (SGD, Adagrad or row-wise Adagrad), with "
        "its LR schedule. Required unless the embeddings section gives one for all tables.",
    )
    data_type: DataType = Field(DataType.FP32, description="Storage type of the weights.")

    @field_validator("embedding_dim")
    @classmethod
    def _fits_fused_kernel(cls, dim: int) -> int:
        if dim % 4:
            raise ValueError(
                f"embedding_dim must be a multiple of 4 (FBGEMM's fused embedding kernels need it), got {dim}; "
                f"use {dim - dim % 4 or 4} or {dim + 4 - dim % 4}."
            )
        return dim


class LargeEmbeddingsConfig(BaseConfig):
    """The tables of one `LargeEmbeddings` module (one EmbeddingBagCollection)."""

    tables: List[EmbeddingBagConfig] = Field(
        description="The tables, in the order their outputs are concatenated."
    )
    tables_to_log: Optional[List[str]] = Field(
        None,
        description="Tables whose mean row norms are logged during training: table names or full "
        "state-dict keys of their weights.",
    )

    def shared_optimizer(self) -> Optional[EmbeddingOptimizerConfig]:
        """The optimizer of tables that name none (a subclass's section-wide setting)."""
        return None

    def table_optimizers(self) -> dict[str, EmbeddingOptimizerConfig]:
        """Each table's optimizer, in table order: its own, else the shared one."""
        shared = self.shared_optimizer()
        return {table.name: table.optimizer or shared for table in self.tables}

    @property
    def feature_names(self) -> list[str]:
        """The sparse features the tables read (one per table, of the table's name), in table order."""
        return [table.name for table in self.tables]

    @model_validator(mode="after")
    def _check_tables(self) -> "LargeEmbeddingsConfig":
        if not self.tables:
            raise ValueError("large embeddings need at least one table.")
        names = [table.name for table in self.tables]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"embedding table names must be unique; repeated: {duplicates}.")
        without = [name for name, optimizer in self.table_optimizers().items() if optimizer is None]
        if without:
            raise ValueError(f"embedding tables {without} have no optimizer; give each table an `optimizer`.")
        unknown = [entry for entry in self.tables_to_log or [] if not self._names_a_table(entry, names)]
        if unknown:
            # Checked here: a typo would otherwise stop training at its first log line.
            raise ValueError(
                f"tables_to_log {unknown} name no table; give table names among {names} (or the "
                "state-dict key of a table's weight, ending in embedding_bags.<table>.weight)."
            )
        return self

    @staticmethod
    def _names_a_table(entry: str, names: list[str]) -> bool:
        return entry in names or any(entry.endswith(f"embedding_bags.{name}.weight") for name in names)
