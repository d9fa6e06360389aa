"""The node types and relations that edge files are checked and batched against."""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np

from tml.projects.twhin.models.config import TwhinModelConfig


@dataclasses.dataclass(frozen=True)
class GraphSchema:
    table_names: tuple[str, ...]
    table_sizes: tuple[int, ...]
    relation_names: tuple[str, ...]
    relation_lhs: tuple[int, ...]  # table index of each relation's lhs
    relation_rhs: tuple[int, ...]  # table index of each relation's rhs

    @staticmethod
    def build(tables: dict[str, int], relations: Sequence[tuple[str, str, str]]) -> "GraphSchema":
        """`tables`: name -> rows, in table order; `relations`: (name, lhs table, rhs table)."""
        names = list(tables)
        for relation, lhs, rhs in relations:
            for side, table in (("lhs", lhs), ("rhs", rhs)):
                if table not in tables:
                    raise ValueError(f"relation '{relation}' {side} '{table}' is not a table; tables: {names}.")
        return GraphSchema(
            table_names=tuple(names),
            table_sizes=tuple(int(tables[name]) for name in names),
            relation_names=tuple(relation for relation, _, _ in relations),
            relation_lhs=tuple(names.index(lhs) for _, lhs, _ in relations),
            relation_rhs=tuple(names.index(rhs) for _, _, rhs in relations),
        )

    @staticmethod
    def from_model_config(config: TwhinModelConfig) -> "GraphSchema":
        return GraphSchema.build(
            config.table_sizes, [(relation.name, relation.lhs, relation.rhs) for relation in config.relations]
        )

    @property
    def num_relations(self) -> int:
        return len(self.relation_names)

    def relation_tables(self) -> np.ndarray:
        """[R, 2] table index of (lhs, rhs) per relation (read-only: built once, used every batch)."""
        return self._relation_tables

    def max_lookups_per_table(self, lookups_per_side: int) -> int:
        """Most lookups one table can get in a batch with `lookups_per_side` on each side: twice as
        many for a table that is the lhs of one relation and the rhs of one (the same or another)."""
        return lookups_per_side * self._most_sides

    @functools.cached_property
    def _most_sides(self) -> int:
        lhs, rhs = set(self.relation_lhs), set(self.relation_rhs)
        return max(((t in lhs) + (t in rhs) for t in range(len(self.table_names))), default=1)

    def sizes_array(self) -> np.ndarray:
        """[T] rows per table (read-only)."""
        return self._sizes

    @functools.cached_property
    def _relation_tables(self) -> np.ndarray:
        tables = np.array([self.relation_lhs, self.relation_rhs], dtype=np.int64).T.reshape(-1, 2)
        tables.flags.writeable = False
        return tables

    @functools.cached_property
    def _sizes(self) -> np.ndarray:
        sizes = np.array(self.table_sizes, dtype=np.int64)
        sizes.flags.writeable = False
        return sizes
