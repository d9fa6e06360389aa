"""Candidate retrieval from TwHIN vectors: for each query node (a user), the K items of another
table that score highest against it, leaving out items it already has an edge to.

The score is the inner product (`dot`, default) or cosine of the items with query vectors. The
plain query is the user's own vector: for the `translation` operator without reciprocal relations,
score(u, x) = u · (x + r) = u · x + u · r, and u · r is the same for every item x, so ranking items
by u · x is ranking them by the trained relation's score; the same holds for `dot`. Every other
trained model (ComplEx or DistMult, or any operator with `relation_aware`, whose reverse relation
gives items a bias x · r') ranks items by x · q(u, r) instead: `relation_queries` builds those q
from the exported relation vectors with the operators' own query functions, so retrieval ranks as
the model's link prediction does. Cosine drops the vectors' norms, which often carry popularity.

Exact search scores the whole item table for a block of queries (one matrix product) and masks the
excluded items before the top-k. With a faiss index (`ann_index`, built with the same metric) each
query asks for K plus its number of excluded items, so that K remain after dropping them.
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch

from tml.projects.twhin import ann_index
from tml.projects.twhin.models.config import Operator
from tml.projects.twhin.models.operators import OPERATORS

RELATIONS_FILE = "relations.parquet"
REVERSE_SUFFIX = ":reverse"

QUERY_BLOCK = 1024


def load_relation_vector(export_dir: str, name: str) -> np.ndarray:
    """The [D] vector of relation `name` in an export's relations.parquet (`<name>:reverse` for the
    reverse relation of a relation-aware model)."""
    path = os.path.join(export_dir, RELATIONS_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: export the TwHIN model with its relation vectors "
                                "(`embeddings export ... --config_yaml_path CONFIG`)")
    table = pq.read_table(path)
    names = table.column("name").to_pylist()
    if name not in names:
        raise KeyError(f"{path} has no relation '{name}'; relations: {[n for n in names if n][:20]} "
                       "(export with --config_yaml_path to name them)")
    return np.asarray(table.column("vector")[names.index(name)].as_py(), dtype=np.float32)


def relation_queries(lhs: np.ndarray, operator: Operator | str, relation: Optional[np.ndarray],
                     reverse: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """([Q, D] query vectors q, [Q] biases b) with score(lhs, relation, x) = x · q + b for the rhs
    table's items x. `reverse` (the relation's reverse vector) is given for relation-aware models:
    they rank rhs candidates with the reverse relation's head query, as their training did. Operators
    without a bias term give b = 0."""
    scorer = OPERATORS[Operator(operator)]
    nodes = torch.from_numpy(np.ascontiguousarray(lhs, dtype=np.float32))
    if reverse is not None:
        query, bias = scorer.head_query(nodes, torch.from_numpy(np.asarray(reverse, dtype=np.float32)))
    else:
        vector = None if relation is None else torch.from_numpy(np.asarray(relation, dtype=np.float32))
        query, bias = scorer.tail_query(nodes, vector)
    bias = torch.zeros(len(nodes)) if bias is None else bias
    return query.numpy(), bias.numpy()


def config_relation(twhin_config: Any, relation: str, label: str = "relation") -> Any:
    """The `RelationConfig` named `relation` in `twhin_config` (a `TwhinConfig`); a KeyError naming
    the config's relations otherwise (`label`: how the caller's user gave the name)."""
    relations = {r.name: r for r in twhin_config.model.relations}
    if relation not in relations:
        raise KeyError(f"{label} '{relation}' is not a relation of the TwHIN config; relations: {sorted(relations)}")
    return relations[relation]


def model_queries(lhs: np.ndarray, export_dir: str, twhin_config: Any, relation: str,
                  tables: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """([Q, D] queries q, [Q] biases b) with the trained model's score of (lhs, `relation`, x) equal
    to x · q + b for every item x of the rhs table, as its link prediction ranks them: the relation's
    operator and vectors from the export's relations.parquet, and for a `relation_aware` model the
    reverse relation's head query (which has no bias). `tables` = the (lhs, rhs) tables the relation
    must connect. `twhin_config` is a `TwhinConfig`."""
    chosen = config_relation(twhin_config, relation)
    if (chosen.lhs, chosen.rhs) != tuple(tables):
        raise ValueError(f"relation '{relation}' connects {chosen.lhs} -> {chosen.rhs}, not {tables[0]} -> {tables[1]}")
    if twhin_config.model.relation_aware:
        return relation_queries(lhs, chosen.operator, None, load_relation_vector(export_dir, relation + REVERSE_SUFFIX))
    uses_vector = OPERATORS[Operator(chosen.operator)].uses_relation_vector
    return relation_queries(lhs, chosen.operator, load_relation_vector(export_dir, relation) if uses_vector else None)


def excluded_lists(query_rows: np.ndarray, seen_queries: np.ndarray, seen_items: np.ndarray) -> list[np.ndarray]:
    """For each query row, the sorted unique items it is paired with in (seen_queries, seen_items)."""
    order = np.lexsort((seen_items, seen_queries))
    queries, items = seen_queries[order], seen_items[order]
    starts = np.searchsorted(queries, query_rows, side="left")
    stops = np.searchsorted(queries, query_rows, side="right")
    return [np.unique(items[a:b]) for a, b in zip(starts, stops)]


def retrieve(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    exclude: Optional[Sequence[np.ndarray]] = None,
    metric: str = "dot",
    index: Optional[Any] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """([Q, k] item rows, [Q, k] scores), best first; -1 and -inf pad a row with fewer than k
    candidates. `exclude[q]` lists item rows never returned for query q. `index`, when given, is a
    faiss index over `items` built with `metric`."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if queries.ndim != 2 or items.ndim != 2 or queries.shape[1] != items.shape[1]:
        raise ValueError(f"queries {queries.shape} and items {items.shape} must be [n, dim] of one dim")
    if exclude is not None and len(exclude) != len(queries):
        raise ValueError(f"{len(exclude)} exclusion lists for {len(queries)} queries")
    exclude = exclude if exclude is not None else [np.zeros(0, np.int64)] * len(queries)
    if index is not None:
        return _retrieve_with_index(queries, k, exclude, metric, index)
    item_matrix = torch.from_numpy(ann_index.prepare_vectors(items, metric))
    take = min(k, items.shape[0])
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    for start in range(0, len(queries), QUERY_BLOCK):
        block = torch.from_numpy(ann_index.prepare_vectors(queries[start:start + QUERY_BLOCK], metric))
        scores = block @ item_matrix.T
        lists = exclude[start:start + QUERY_BLOCK]
        rows = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
        if rows.size:
            columns = np.concatenate(lists).astype(np.int64)
            scores[torch.from_numpy(rows), torch.from_numpy(columns)] = float("-inf")
        top = torch.topk(scores, take, dim=1)
        ids, values = top.indices.numpy(), top.values.numpy()
        ids = np.where(np.isneginf(values), -1, ids)
        out_ids[start:start + len(lists), :take] = ids
        out_scores[start:start + len(lists), :take] = values
    return out_ids, out_scores


def _retrieve_with_index(queries: np.ndarray, k: int, exclude: Sequence[np.ndarray], metric: str,
                         index: Any) -> tuple[np.ndarray, np.ndarray]:
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    extra = max((len(x) for x in exclude), default=0)
    found, scores = ann_index.search(index, queries, min(k + extra, index.ntotal), metric)
    for row, (ids, values, skip) in enumerate(zip(found, scores, exclude)):
        keep = (ids >= 0) & ~np.isin(ids, skip)
        ids, values = ids[keep][:k], values[keep][:k]
        out_ids[row, : len(ids)], out_scores[row, : len(ids)] = ids, values
    return out_ids, out_scores
