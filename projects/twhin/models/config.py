"""The TwHIN model: node-type tables, relations between them, and how each relation scores an edge."""
from __future__ import annotations

import enum
from typing import List

from pydantic import Field, model_validator

from tml.common.modules.embedding.config import LargeEmbeddingsConfig
from tml.core.config import BaseConfig
from tml.core.optimizers.config import OptimizerConfig


class Operator(str, enum.Enum):
    """Score of an edge (l, r, x) from the node embeddings l, x and the relation's vector r.

    translation:      l . (x + r)              (the original's; r shifts the rhs)
    dot:              l . x                    (no relation parameter; symmetric)
    diagonal:         sum(l * r * x)           (DistMult; symmetric)
    complex_diagonal: Re(sum(l * r * conj(x))) (ComplEx; the first half of each vector is the real
                                                part, the second the imaginary part; asymmetric)
    """

    TRANSLATION = "translation"
    DOT = "dot"
    DIAGONAL = "diagonal"
    COMPLEX_DIAGONAL = "complex_diagonal"


class Relation(BaseConfig):
    name: str = Field(description="Relation name (its index in `relations` is the `rel` value in the data).")
    lhs: str = Field(description="Table (node type) of the left-hand node.")
    rhs: str = Field(description="Table (node type) of the right-hand node.")
    operator: Operator = Field(Operator.TRANSLATION, description="How an edge of this relation is scored.")


class TwhinEmbeddingsConfig(LargeEmbeddingsConfig):
    """One table per node type. All share one width and storage type: every relation compares rows
    of two tables, and the original sums the tables' outputs per lookup."""

    @model_validator(mode="after")
    def _check_same_dim_and_type(self) -> "TwhinEmbeddingsConfig":
        if not self.tables:
            raise ValueError("embeddings.tables must list at least one table.")
        dims = {table.name: table.embedding_dim for table in self.tables}
        if len(set(dims.values())) > 1:
            raise ValueError(f"all TwHIN tables must have the same embedding_dim; got {dims}.")
        types = {table.name: table.data_type.value for table in self.tables}
        if len(set(types.values())) > 1:
            raise ValueError(f"all TwHIN tables must have the same data_type; got {types}.")
        return self


class TwhinModelConfig(BaseConfig):
    embeddings: TwhinEmbeddingsConfig
    relations: List[Relation] = Field(description="Edge types; `rel` in the data indexes this list.")
    translation_optimizer: OptimizerConfig = Field(
        description="Dense optimizer (and LR schedule) of the relation vectors."
    )

    @model_validator(mode="after")
    def _check_relations(self) -> "TwhinModelConfig":
        if not self.relations:
            raise ValueError("model.relations must list at least one relation.")
        tables = [table.name for table in self.embeddings.tables]
        for index, relation in enumerate(self.relations):
            for side in ("lhs", "rhs"):
                table = getattr(relation, side)
                if table not in tables:
                    raise ValueError(
                        f"relations[{index}] ('{relation.name}') {side} '{table}' is not a table; tables: {tables}."
                    )
        names = [relation.name for relation in self.relations]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"relation names must be unique; repeated: {duplicates}.")
        dim = self.embedding_dim
        complex_relations = [r.name for r in self.relations if r.operator == Operator.COMPLEX_DIAGONAL]
        if complex_relations and dim % 2:
            raise ValueError(
                f"complex_diagonal (relations {complex_relations}) needs an even embedding_dim, got {dim}."
            )
        return self

    @property
    def embedding_dim(self) -> int:
        return self.embeddings.tables[0].embedding_dim

    @property
    def table_names(self) -> list[str]:
        return [table.name for table in self.embeddings.tables]

    @property
    def table_sizes(self) -> dict[str, int]:
        return {table.name: table.num_embeddings for table in self.embeddings.tables}
