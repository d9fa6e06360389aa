"""TwHIN evaluation: the original's sampled AUC over scored pairs, and filtered link prediction.

Link prediction ranks, for each evaluation edge (h, r, t), the true tail t among all rows of r's rhs
table given (h, r), and the true head h among all rows of r's lhs table given (r, t). In the
filtered setting every other known true edge is removed from the candidates first. The rank of the
true entity is 1 + (candidates scoring higher) + half of (other candidates scoring equal). Reported:
MRR and Hits@k over both sides together, and MRR per side.

Distribution: every rank gathers the full tables (a collective call), then scores the query chunks
c with c % world_size == rank, and the per-edge ranks are summed across ranks (each edge is filled
by exactly one rank, so the sum is exact). Chunks are the same on any world size, so 1 rank and N
ranks compute identical ranks and identical metrics.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torchmetrics
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.tensor import DTensor

from tml.core.metrics import Auc
from tml.core.optimizers import table_of_parameter
from tml.projects.twhin.data.reader import EdgeArrays, read_edges
from tml.projects.twhin.data.schema import GraphSchema
from tml.projects.twhin.models.models import TwhinModel

if TYPE_CHECKING:
    from tml.projects.twhin.config import TwhinConfig
    from tml.projects.twhin.data.config import TwhinDataConfig


class EdgeAuc(Auc):
    """The original's sampled AUC, over the scored pairs that count (weight > 0): an edge's own node
    among its in-batch candidates and the pairs of zero-weight padding edges are left out."""

    def transform(self, outputs: Mapping[str, Any]) -> dict[str, Any]:
        weights = outputs.get("weights")
        if weights is not None:
            keep = weights.reshape(-1) > 0
            outputs = {"logits": outputs["logits"].reshape(-1)[keep], "labels": outputs["labels"].reshape(-1)[keep]}
        return super().transform(outputs)


def create_metrics(device: torch.device = torch.device("cpu")) -> torchmetrics.MetricCollection:
    return torchmetrics.MetricCollection({"AUC": EdgeAuc(128)}).to(device)


# ------------------------------------------------------------------------------- model and tables


def unwrap_twhin_model(model: nn.Module) -> TwhinModel:
    """The TwhinModel inside DMP / DDP / TwhinModelAndLoss wrappers."""
    for module in model.modules():
        if isinstance(module, TwhinModel):
            return module
    raise TypeError(f"{type(model).__name__} contains no TwhinModel.")


def _full_tensor(value: Any) -> torch.Tensor:
    """A table as one dense CPU tensor on every rank; collective for sharded tables."""
    if isinstance(value, DTensor):
        return value.full_tensor().cpu()
    if isinstance(value, ShardedTensor):
        full = torch.zeros(value.size(), dtype=value.dtype)
        for shard in value.local_shards():
            rows, cols = shard.metadata.shard_offsets
            height, width = shard.metadata.shard_sizes
            full[rows : rows + height, cols : cols + width] = shard.tensor.cpu()
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(full)  # shards are disjoint: each element is one shard's value plus zeros
        return full
    return value.detach().cpu()


def gather_dense_tables(model: nn.Module, table_names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Full weights of the named tables from a sharded or plain model. With sharded tables every
    rank must call this (it all-reduces)."""
    found: dict[str, Any] = {}
    for name, value in model.state_dict().items():
        table = table_of_parameter(name)
        if table in table_names:
            found[table] = value
    missing = [name for name in table_names if name not in found]
    if missing:
        raise KeyError(f"model has no weights for tables {missing}.")
    return {name: _full_tensor(found[name]) for name in table_names}


# --------------------------------------------------------------------------------- known edges


class KnownEdges:
    """True edges indexed for filtering: the tails of each (rel, lhs) and the heads of each (rel, rhs)."""

    def __init__(self, edges: EdgeArrays, id_bound: int) -> None:
        self._bound = max(int(id_bound), 1)
        self._tails = self._index(edges.rel, edges.lhs, edges.rhs)
        self._heads = self._index(edges.rel, edges.rhs, edges.lhs)

    def _index(self, rel: np.ndarray, key: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = rel.astype(np.int64) * self._bound + key
        order = np.argsort(keys, kind="stable")
        return keys[order], value[order].astype(np.int64)

    def lookup(self, side: str, rel: np.ndarray, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query position, known id) pairs: every known `side` ("tail"/"head") for each query."""
        sorted_keys, values = self._tails if side == "tail" else self._heads
        keys = rel.astype(np.int64) * self._bound + key
        low = np.searchsorted(sorted_keys, keys, side="left")
        counts = np.searchsorted(sorted_keys, keys, side="right") - low
        total = int(counts.sum())
        query = np.repeat(np.arange(keys.shape[0]), counts)
        position = np.repeat(low - np.cumsum(counts) + counts, counts) + np.arange(total)
        return query, values[position]


# ------------------------------------------------------------------------------------ ranking


@torch.no_grad()
def _rank_side(
    model: TwhinModel,
    tables: Mapping[str, torch.Tensor],
    schema: GraphSchema,
    edges: EdgeArrays,
    side: str,
    known: Optional[KnownEdges],
    entity_chunk_size: int,
) -> np.ndarray:
    """Rank of the true tail (side="tail") or head of each edge, as float64."""
    relation_tables = schema.relation_tables()
    given_column, target_column = (0, 1) if side == "tail" else (1, 0)
    given, target = (edges.lhs, edges.rhs) if side == "tail" else (edges.rhs, edges.lhs)
    table_pairs = relation_tables[edges.rel][:, [given_column, target_column]]
    query_fn = model.tail_query if side == "tail" else model.head_query
    ranks = np.zeros(len(edges), dtype=np.float64)
    for given_table, target_table in np.unique(table_pairs, axis=0):
        rows = np.flatnonzero((table_pairs[:, 0] == given_table) & (table_pairs[:, 1] == target_table))
        given_rows = tables[schema.table_names[given_table]][torch.from_numpy(given[rows])].float()
        query, bias = query_fn(given_rows, torch.from_numpy(edges.rel[rows]))
        query, bias = query.double(), bias.double()
        candidates = tables[schema.table_names[target_table]]
        true_ids = target[rows]
        true_scores = (candidates[torch.from_numpy(true_ids)].double() * query).sum(-1) + bias
        # Taken out of the candidates: the true entity itself and, when filtering, every known one.
        query_pos, removed = np.arange(len(rows)), true_ids
        if known is not None:
            known_pos, known_ids = known.lookup(side, edges.rel[rows], given[rows])
            query_pos, removed = np.concatenate([query_pos, known_pos]), np.concatenate([removed, known_ids])
        query_pos, removed = torch.from_numpy(query_pos), torch.from_numpy(removed)
        higher = torch.zeros(len(rows), dtype=torch.float64)
        equal = torch.zeros(len(rows), dtype=torch.float64)
        # A NaN score ranks last: a NaN true score below every candidate (comparisons with NaN are
        # all False, which would rank it first), a NaN candidate below the true score.
        true_is_nan = torch.isnan(true_scores)
        for start in range(0, candidates.shape[0], entity_chunk_size):
            chunk = candidates[start : start + entity_chunk_size].double()
            scores = query @ chunk.T + bias.unsqueeze(1)
            kept = torch.ones_like(scores, dtype=torch.bool)
            inside = (removed >= start) & (removed < start + chunk.shape[0])
            kept[query_pos[inside], removed[inside] - start] = False
            scores = torch.where(kept & ~torch.isnan(scores), scores, float("-inf"))
            higher += torch.where(true_is_nan, kept.sum(1), (scores > true_scores.unsqueeze(1)).sum(1))
            equal += (scores == true_scores.unsqueeze(1)).sum(1)
        ranks[rows] = (1.0 + higher + 0.5 * equal).numpy()
    return ranks


@dataclasses.dataclass
class LinkPredictionRanks:
    tail: np.ndarray  # [E] rank of the true rhs
    head: np.ndarray  # [E] rank of the true lhs

    def metrics(self, hits_at: Sequence[int] = (1, 10)) -> dict[str, float]:
        both = np.concatenate([self.tail, self.head])
        if both.size == 0:
            raise ValueError("no edge was ranked.")
        result = {
            "mrr": float(np.mean(1.0 / both)),
            "mrr_tail": float(np.mean(1.0 / self.tail)),
            "mrr_head": float(np.mean(1.0 / self.head)),
            "mean_rank": float(np.mean(both)),
        }
        result.update({f"hits@{k}": float(np.mean(both <= k)) for k in hits_at})
        return result


def link_prediction_ranks(
    model: nn.Module,
    edges: EdgeArrays,
    schema: GraphSchema,
    known_edges: Optional[EdgeArrays] = None,
    query_chunk_size: int = 256,
    entity_chunk_size: int = 65536,
    tables: Optional[Mapping[str, torch.Tensor]] = None,
) -> LinkPredictionRanks:
    """Filtered (when `known_edges` is given) ranks of every edge of `edges`, on every rank.

    All ranks must call this with the same `edges` (a collective call); each scores its share.
    `tables` skips gathering them from the model (they must then be the full tables).
    """
    twhin = unwrap_twhin_model(model)
    if tables is None:
        tables = gather_dense_tables(model, list(schema.table_names))
    rank = dist.get_rank() if dist.is_initialized() else 0
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    known = None
    if known_edges is not None:
        known = KnownEdges(EdgeArrays.concat([known_edges, edges]), max(schema.table_sizes))
    ranks = torch.zeros(2, len(edges), dtype=torch.float64)
    for chunk_index, start in enumerate(range(0, len(edges), query_chunk_size)):
        if chunk_index % world_size != rank:
            continue
        chunk = edges.take(slice(start, start + query_chunk_size))
        for row, side in enumerate(("tail", "head")):
            ranks[row, start : start + len(chunk)] = torch.from_numpy(
                _rank_side(twhin, tables, schema, chunk, side, known, entity_chunk_size))
    if world_size > 1:
        dist.all_reduce(ranks)
    return LinkPredictionRanks(tail=ranks[0].numpy(), head=ranks[1].numpy())


def link_prediction_metrics(
    model: nn.Module,
    edges: EdgeArrays,
    schema: GraphSchema,
    known_edges: Optional[EdgeArrays] = None,
    hits_at: Sequence[int] = (1, 10),
    **kwargs: Any,
) -> dict[str, float]:
    """{"mrr", "mrr_tail", "mrr_head", "mean_rank", "hits@k"...}; see `link_prediction_ranks`."""
    return link_prediction_ranks(model, edges, schema, known_edges, **kwargs).metrics(hits_at)


class LinkPredictionEvaluator:
    """Filtered link prediction on `config.validation_data`, as `config.link_prediction` asks.

    Reads the edges once (every rank reads all of them: ranking needs the whole evaluation set and
    filtering needs every known edge) and then `evaluate(model)` may be called at each evaluation,
    by all ranks together.
    """

    def __init__(self, config: "TwhinConfig") -> None:
        if config.validation_data is None:
            raise ValueError("link prediction needs validation_data in the config.")
        self.config = config
        self.schema = GraphSchema.from_model_config(config.model)
        self._edges: Optional[EdgeArrays] = None
        self._known: Optional[EdgeArrays] = None

    def _read(self, data_config: "TwhinDataConfig") -> EdgeArrays:
        from tml.projects.twhin.data.data import column_names

        return read_edges(data_config.data_root, self.schema, column_names(data_config),
                          data_config.offset, data_config.limit)

    def edges(self) -> tuple[EdgeArrays, Optional[EdgeArrays]]:
        """(edges to rank, known true edges or None when not filtering)."""
        if self._edges is None:
            settings = self.config.link_prediction
            validation = self._read(self.config.validation_data)
            self._edges = validation.take(slice(0, settings.max_edges)) if settings.max_edges else validation
            if settings.filtered:
                parts = [self._read(self.config.train_data), validation]
                parts += [read_edges(pattern, self.schema) for pattern in settings.known_edges]
                self._known = EdgeArrays.concat(parts)
        return self._edges, self._known

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        settings = self.config.link_prediction
        edges, known = self.edges()
        return link_prediction_metrics(
            model, edges, self.schema, known, hits_at=settings.hits_at,
            query_chunk_size=settings.query_chunk_size, entity_chunk_size=settings.entity_chunk_size,
        )
