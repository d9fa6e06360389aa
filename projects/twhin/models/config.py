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


class LossKind(str, enum.Enum):
    """How an edge's score is compared with its negatives' (PyTorch-BigGraph's three losses).

    logistic: weighted BCE over the positive (label 1) and each negative (label 0), the negatives of
              an edge sharing its weight (the original's loss).
    softmax:  cross-entropy of the positive against the positive and its negatives, per side.
    ranking:  margin hinge max(0, margin - positive + negative) for every negative.
    """

    LOGISTIC = "logistic"
    SOFTMAX = "softmax"
    RANKING = "ranking"


class Regularizer(str, enum.Enum):
    """Penalty on the rows a batch touches (its edges' nodes and relation vectors)."""

    NONE = "none"
    L2 = "l2"  # sum of squares
    N3 = "n3"  # sum of cubed absolute values (Lacroix et al. 2018; for ComplEx / DistMult)


class TwhinLossConfig(BaseConfig):
    kind: LossKind = Field(LossKind.LOGISTIC, description="logistic (the original's), softmax or ranking.")
    margin: float = Field(0.1, gt=0, description="Margin of the ranking loss.")
    regularizer: Regularizer = Field(Regularizer.NONE, description="Penalty on the rows a batch touches.")
    regularization_weight: float = Field(0.0, ge=0, description="Weight of the penalty (per edge).")


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
    relation_aware: bool = Field(
        False,
        description="Reciprocal relations: ranking rhs candidates uses a second vector per relation (the "
        "relation read backwards, rows R.. of the relation vectors), so both head and tail ranking depend "
        "on the relation (PyTorch-BigGraph's knowledge-graph setting). Off: the original's single operator, "
        "whose translation ranks tails without looking at the relation.",
    )
    loss: TwhinLossConfig = Field(TwhinLossConfig(), description="Loss and optional regularisation.")

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
