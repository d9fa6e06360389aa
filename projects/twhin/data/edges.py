"""Edge batches for the TwHIN model, and the dataset that produces them for one rank.

Layout of `EdgeBatch.nodes` (a KeyedJaggedTensor with one key per table; every lookup is a bag of
exactly one id, so the pooled embedding of lookup i is that node's row):
- lookups 0 .. 2B-1: lhs_0, rhs_0, lhs_1, rhs_1, ... (the original's interleaving);
- then B*G lhs-side global negatives (edge-major), then B*G rhs-side global negatives, where G is
  `global_negatives`; each is a uniform id of the table that side's node belongs to.
In-batch negatives are indices of partner edges of the same relation (`lhs_negatives` [B, N]: use
the partner's lhs in place of this edge's lhs; `rhs_negatives` likewise), -1 where the edge's
relation has no other edge in the batch.

Every batch of an `EdgesDataset` has exactly `batch_size` edges on every rank: sharded embedding
lookups exchange equal-sized blocks between ranks. The last batch of an epoch is completed with
copies of the rank's edges that weigh 0 (they add nothing to the loss or the metrics).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.common.batch import DataclassBatch
from tml.common.prefetch import BackgroundIterator
from tml.projects.twhin.data.reader import (
    ColumnNames,
    EdgeArrays,
    count_rows,
    list_edge_files,
    rank_share,
    read_row_range,
    row_ranges,
    window,
)
from tml.projects.twhin.data.schema import GraphSchema


@dataclasses.dataclass
class EdgeBatch(DataclassBatch):
    nodes: KeyedJaggedTensor
    labels: torch.Tensor  # [B] ones: every edge in the data is a positive
    rels: torch.Tensor  # [B] relation index
    weights: torch.Tensor  # [B] edge weight
    lhs_negatives: torch.Tensor  # [B, N] partner edge whose lhs replaces this lhs, -1 = none
    rhs_negatives: torch.Tensor  # [B, N] partner edge whose rhs replaces this rhs, -1 = none

    @property
    def num_edges(self) -> int:
        return int(self.rels.shape[0])

    @property
    def global_negatives(self) -> int:
        """G, recovered from the KJT's stride (2B + 2BG lookups)."""
        return (self.nodes.stride() // max(self.num_edges, 1) - 2) // 2

    def lookups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(table index, id) of every lookup in KJT order: decodes `nodes` for inspection."""
        lengths = self.nodes.lengths().view(len(self.nodes.keys()), -1)
        tables = lengths.argmax(0)
        ids = torch.empty_like(tables)
        for index, key in enumerate(self.nodes.keys()):
            ids[tables == index] = self.nodes[key].values().to(ids.dtype)
        return tables, ids

    def edge_nodes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lhs ids, rhs ids) of the batch's edges."""
        _, ids = self.lookups()
        return ids[0 : 2 * self.num_edges : 2], ids[1 : 2 * self.num_edges : 2]


def sample_in_batch_partners(rels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """[B, count] indices of other edges with the same relation, uniform with replacement; -1 where
    the edge is alone in its relation (it cannot be its own negative)."""
    size = rels.shape[0]
    if count == 0 or size == 0:
        return np.full((size, count), -1, dtype=np.int64)
    order = np.argsort(rels, kind="stable")
    sorted_rels = rels[order]
    group_start = np.searchsorted(sorted_rels, sorted_rels, side="left")
    group_size = np.searchsorted(sorted_rels, sorted_rels, side="right") - group_start
    position = np.arange(size) - group_start
    # An offset in [1, group_size) from the edge's own position never lands on the edge itself.
    # (Scaling uniform floats is several times faster than `integers` with per-row bounds.)
    step = 1 + (rng.random((size, count)) * np.maximum(group_size - 1, 1)[:, None]).astype(np.int64)
    partner = order[group_start[:, None] + (position[:, None] + step) % group_size[:, None]]
    partner[group_size == 1] = -1
    result = np.empty_like(partner)
    result[order] = partner
    return result


def _nodes_kjt(table_of_lookup: np.ndarray, ids: np.ndarray, table_names: tuple[str, ...]) -> KeyedJaggedTensor:
    lookups = table_of_lookup.shape[0]
    order = np.argsort(table_of_lookup, kind="stable")
    lengths = np.zeros((len(table_names), lookups), dtype=np.int64)
    lengths[table_of_lookup, np.arange(lookups)] = 1
    return KeyedJaggedTensor(
        keys=list(table_names),
        values=torch.from_numpy(np.ascontiguousarray(ids[order])),
        lengths=torch.from_numpy(lengths.reshape(-1)),
    )


def edges_to_batch(
    edges: EdgeArrays,
    schema: GraphSchema,
    in_batch_negatives: int = 0,
    global_negatives: int = 0,
    rng: Optional[np.random.Generator] = None,
    real_edges: Optional[int] = None,
) -> EdgeBatch:
    """One batch of (already checked) edges, with its negatives sampled from `rng`. Only the first
    `real_edges` (default: all) serve as in-batch negatives; the rest are zero-weight padding."""
    rng = rng if rng is not None else np.random.default_rng()
    size = len(edges)
    real = size if real_edges is None else real_edges
    relation_tables = schema.relation_tables()
    lhs_table, rhs_table = relation_tables[edges.rel, 0], relation_tables[edges.rel, 1]
    tables = [np.stack([lhs_table, rhs_table], 1).reshape(-1)]
    ids = [np.stack([edges.lhs, edges.rhs], 1).reshape(-1)]
    if global_negatives:
        sizes = schema.sizes_array()
        for side_table in (lhs_table, rhs_table):
            tables.append(np.repeat(side_table, global_negatives))
            ids.append(rng.integers(0, sizes[side_table][:, None], size=(size, global_negatives)).reshape(-1))
    # Both sides' partners in one draw: the relation grouping is computed once.
    sampled = np.full((size, 2 * in_batch_negatives), -1, dtype=np.int64)
    sampled[:real] = sample_in_batch_partners(edges.rel[:real], 2 * in_batch_negatives, rng)
    partners = [torch.from_numpy(np.ascontiguousarray(half)) for half in np.split(sampled, 2, axis=1)]
    return EdgeBatch(
        nodes=_nodes_kjt(np.concatenate(tables), np.concatenate(ids).astype(np.int64), schema.table_names),
        labels=torch.ones(size, dtype=torch.float32),
        rels=torch.from_numpy(edges.rel.astype(np.int64)),
        weights=torch.from_numpy(edges.weight.astype(np.float32)),
        lhs_negatives=partners[0],
        rhs_negatives=partners[1],
    )


def padded_batches(rows: int, batch_size: int, num_batches: int) -> list[tuple[np.ndarray, int]]:
    """(positions into `rows` items, how many of them are real) for `num_batches` batches of exactly
    `batch_size`; positions past the last row wrap around to the start (padding)."""
    positions = np.resize(np.arange(rows), num_batches * batch_size)
    return [
        (positions[start : start + batch_size], int(np.clip(rows - start, 0, batch_size)))
        for start in range(0, num_batches * batch_size, batch_size)
    ]


class EdgesDataset:
    """One rank's edges of the files matching `file_pattern`, as shuffled `EdgeBatch`es.

    The rank's part is read once (checked against the graph) and kept in memory; each epoch it is
    shuffled with a seed derived from (seed, epoch, rank). All ranks yield the same number of
    batches per epoch, all of exactly `batch_size` edges (zero-weight padding completes the last
    ones), since a sharded model exchanges equal blocks between ranks at every step.
    """

    def __init__(
        self,
        file_pattern: str,
        schema: GraphSchema,
        batch_size: int,
        in_batch_negatives: int = 0,
        global_negatives: int = 0,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
        shuffle: bool = True,
        prefetch: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        columns: ColumnNames = ColumnNames(),
    ) -> None:
        self.file_pattern = file_pattern
        self.schema = schema
        self.batch_size = batch_size
        self.in_batch_negatives = in_batch_negatives
        self.global_negatives = global_negatives
        self.shuffle = shuffle
        self.prefetch = prefetch
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.columns = columns
        self.files = list_edge_files(file_pattern)
        counts = count_rows(self.files)
        self._start, self._stop = window(sum(counts), offset, limit)
        if self._stop - self._start < world_size:
            raise ValueError(
                f"{file_pattern}: {self._stop - self._start} edges selected (offset={offset}, limit={limit}) "
                f"cannot be split over {world_size} ranks."
            )
        self._ranges = row_ranges(self.files, counts, *rank_share(self._start, self._stop, rank, world_size))
        largest_share = -(-(self._stop - self._start) // world_size)
        self.num_batches = -(-largest_share // batch_size)
        self._edges: Optional[EdgeArrays] = None

    @property
    def num_edges(self) -> int:
        """Edges selected over all ranks."""
        return self._stop - self._start

    def edges(self) -> EdgeArrays:
        """This rank's edges in file order (read and checked on first use)."""
        if self._edges is None:
            self._edges = EdgeArrays.concat([read_row_range(r, self.schema, self.columns) for r in self._ranges])
        return self._edges

    def batches(self, epoch: int = 0) -> Iterator[EdgeBatch]:
        edges = self.edges()
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        order = rng.permutation(len(edges)) if self.shuffle else np.arange(len(edges))
        for positions, real in padded_batches(len(edges), self.batch_size, self.num_batches):
            chosen = edges.take(order[positions])
            chosen.weight = np.where(np.arange(self.batch_size) < real, chosen.weight, 0.0).astype(np.float32)
            yield edges_to_batch(
                chosen, self.schema, self.in_batch_negatives, self.global_negatives, rng, real_edges=real
            )

    def __iter__(self) -> Iterator[EdgeBatch]:
        return self.batches(0)

    def __len__(self) -> int:
        return self.num_batches

    def _epochs(self, num_epochs: Optional[int]) -> Iterator[EdgeBatch]:
        epoch = 0
        while num_epochs is None or epoch < num_epochs:
            yield from self.batches(epoch)
            epoch += 1

    def dataloader(self, num_epochs: Optional[int] = 1) -> Iterator[EdgeBatch]:
        """Batches of `num_epochs` epochs in a row (None: forever), each shuffled anew; `prefetch`
        of them are prepared ahead in a background thread (the same stream as without)."""
        if self.prefetch > 0:
            self.edges()  # read (and check) in this thread: a bad file fails here, not mid-training
            return BackgroundIterator(self._epochs(num_epochs), depth=self.prefetch, name="tml-twhin-edges")
        return self._epochs(num_epochs)
