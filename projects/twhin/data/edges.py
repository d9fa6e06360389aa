"""Edge batches for the TwHIN model, and the dataset that produces them for one rank.

Lookups, in order (each lookup is one node's row):
- 0 .. B-1: the lhs nodes of the B edges; B .. 2B-1: their rhs nodes;
- then B*G lhs-side global negatives (edge-major), then B*G rhs-side global negatives, where G is
  `global_negatives`; each is a uniform id of the table that side's node belongs to.
`EdgeBatch.nodes` is a KeyedJaggedTensor with one key per table holding that table's lookups (bags
of one id) in this order; `lookup_rows` maps each lookup to its row in the pooled output.
In-batch negatives, as in the original, are shared by the edges of a relation: `lhs_negatives`
[R, N] holds, for each relation r, N edges of r in this batch whose lhs nodes are the lhs-side
negatives of every edge of r (`rhs_negatives` likewise, drawn independently): a random permutation
of the relation's edges, repeated when it has fewer than N; -1 where the batch has no edge of r.
An edge's own index among them is not a negative (the original scored the true pair as one).

The batch also carries what the loss needs about every scored pair, in the model's order
(positives, in-batch lhs-side, in-batch rhs-side, global lhs-side, global rhs-side negatives):
`pair_labels` (1 for positives, 0 for negatives) and `pair_weights` (the edge's weight for a
positive; its negatives share that weight equally, the original's weighting; 0 for a negative that
is the edge itself or missing). They depend on the sampled negatives only, so they are computed here
with the sampling instead of by the model at every step.

Every batch of an `EdgesDataset` has exactly `batch_size` edges on every rank: sharded embedding
lookups exchange equal-sized blocks between ranks. The last batch of an epoch is completed with
copies of the rank's edges that weigh 0 (they add nothing to the loss or the metrics).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
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
    nodes: KeyedJaggedTensor  # one key per table: that table's lookups, in lookup order (see `lookup_rows`)
    labels: torch.Tensor  # [B] ones: every edge in the data is a positive
    rels: torch.Tensor  # [B] relation index
    weights: torch.Tensor  # [B] edge weight
    lhs_negatives: torch.Tensor  # [R, N] per relation: edges whose lhs are its lhs-side negatives, -1 = none
    rhs_negatives: torch.Tensor  # [R, N] per relation: edges whose rhs are its rhs-side negatives, -1 = none
    lookup_rows: torch.Tensor  # [L] row of each lookup in the pooled embeddings viewed as [stride * T, D]
    pair_labels: torch.Tensor  # [B * (1 + 2N + 2G)] label of every scored pair (see the module doc)
    pair_weights: torch.Tensor  # [B * (1 + 2N + 2G)] loss weight of every scored pair

    @property
    def num_edges(self) -> int:
        return int(self.rels.shape[0])

    @property
    def batch_size(self) -> int:
        return self.num_edges

    @property
    def global_negatives(self) -> int:
        """G, from the number of lookups (2B + 2BG)."""
        return (int(self.lookup_rows.shape[0]) // max(self.num_edges, 1) - 2) // 2

    def lookups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(table index, id) of every lookup, in lookup order: decodes `nodes` for inspection."""
        keys = self.nodes.keys()
        tables, positions = self.lookup_rows % len(keys), self.lookup_rows // len(keys)
        ids = torch.empty_like(self.lookup_rows)
        for index, key in enumerate(keys):
            mine = tables == index
            ids[mine] = self.nodes[key].values().to(ids.dtype)[positions[mine]]
        return tables, ids

    def edge_nodes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lhs ids, rhs ids) of the batch's edges."""
        _, ids = self.lookups()
        return ids[: self.num_edges], ids[self.num_edges : 2 * self.num_edges]


def _sort_keys(values: np.ndarray, upper: int) -> np.ndarray:
    """Small non-negative ints (< `upper`) as int16 where they fit: numpy's stable sort is then a
    radix sort (4x faster at 4,000 values than on int64)."""
    return values.astype(np.int16) if upper <= np.iinfo(np.int16).max else values


def _relation_negatives(
    rels: np.ndarray, real: np.ndarray, num_relations: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """[K, R, N] for K batches of relations `rels` [K, B] whose first `real[k]` edges are real:
    per batch and relation, a uniform random permutation of its real edges (indices within the
    batch), repeated when it has fewer than N; -1 where it has none."""
    batches, size = rels.shape
    if count == 0 or size == 0:
        return np.full((batches, num_relations, count), -1, dtype=np.int64)
    groups = batches * num_relations  # (batch, relation); padding edges go to one last group
    is_real = np.arange(size) < real[:, None]
    keys = np.where(is_real, np.arange(batches)[:, None] * num_relations + rels, groups).reshape(-1)
    shuffled = rng.permutation(keys.shape[0])
    order = shuffled[np.argsort(_sort_keys(keys, groups + 1)[shuffled], kind="stable")]  # by group, random within
    group_sizes = np.bincount(keys, minlength=groups + 1)[:groups]
    group_starts = np.cumsum(group_sizes) - group_sizes
    positions = group_starts[:, None] + np.arange(count) % np.maximum(group_sizes, 1)[:, None]
    negatives = order[np.minimum(positions, keys.shape[0] - 1)].reshape(batches, num_relations, count)
    negatives -= (np.arange(batches) * size)[:, None, None]  # index within the batch
    negatives[group_sizes.reshape(batches, num_relations) == 0] = -1
    return negatives


def sample_relation_negatives(
    rels: np.ndarray, num_relations: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """[num_relations, count] edge indices per relation: a uniform random permutation of the
    relation's edges in `rels`, repeated when it has fewer than `count` (the original's randperm
    scheme: without replacement whenever possible); -1 for relations without an edge."""
    return _relation_negatives(rels[None, :], np.array([rels.shape[0]]), num_relations, count, rng)[0]


def scored_pair_weights(
    weights: np.ndarray, lhs_negatives: np.ndarray, rhs_negatives: np.ndarray, global_negatives: int
) -> np.ndarray:
    """[K, B * (1 + 2N + 2G)] loss weight of every scored pair of K batches (`weights` [K, B],
    negatives [K, R, N]), in the model's order: an edge's negatives share the edge's weight equally
    (the original's weighting), so together they weigh as much as the edge; an in-batch negative
    that is the edge itself weighs 0 and takes no share. A relation's negatives are drawn from its
    real edges, so only zero-weight padding can lack them."""
    batches, size = weights.shape
    count = lhs_negatives.shape[2]
    # Every drawn negative e at (k, r, n) is shared by the edges of r, and is edge e itself: a hit.
    hits = []
    for negatives in (lhs_negatives, rhs_negatives):
        drawn = negatives >= 0
        batch, _, column = np.nonzero(drawn)
        hits.append((batch, negatives[drawn], column))
    counts = np.full(batches * size, 2 * count + 2 * global_negatives, dtype=np.int64)
    for batch, edge, _ in hits:
        counts -= np.bincount(batch * size + edge, minlength=batches * size)
    share = np.where(counts > 0, weights.reshape(-1) / np.maximum(counts, 1), 0.0).astype(np.float32)
    share = share.reshape(batches, size)
    out = np.empty((batches, size * (1 + 2 * count + 2 * global_negatives)), dtype=np.float32)
    out[:, :size] = weights
    for side, (batch, edge, column) in enumerate(hits):
        block = out[:, size * (1 + side * count) : size * (1 + (side + 1) * count)].reshape(batches, size, count)
        block[:] = share[:, :, None]
        block[batch, edge, column] = 0.0
    sampled = np.repeat(share, global_negatives, axis=1)  # [K, B * G], edge-major
    out[:, size * (1 + 2 * count) :] = np.concatenate([sampled, sampled], axis=1)  # lhs side, then rhs side
    return out


@functools.lru_cache(maxsize=8)
def _pair_labels(size: int, total: int) -> torch.Tensor:
    """1 for the B positives, 0 for the negatives; one read-only tensor per batch shape."""
    labels = torch.zeros(total, dtype=torch.float32)
    labels[:size] = 1.0
    return labels


@functools.lru_cache(maxsize=8)
def _single_table_layout(lookups: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lengths, offsets, lookup rows) of a one-table KJT: the same for every batch of a shape."""
    return (
        torch.ones(lookups, dtype=torch.int64),
        torch.arange(lookups + 1, dtype=torch.int64),
        torch.arange(lookups, dtype=torch.int64),
    )


def _nodes_kjts(
    table_of_lookup: np.ndarray, ids: np.ndarray, table_names: tuple[str, ...], stride: int
) -> list[tuple[KeyedJaggedTensor, torch.Tensor]]:
    """(KJT, lookup rows) per batch, for lookups [K, L] (table index and id of each).

    Under each table's key, that table's lookups in lookup order, one bag of one id each, then
    empty bags up to `stride`: the embedding kernel pools one bag per lookup (plus padding), and
    lookup i's row is `pooled.view(stride * T, D)[rows[i]]`, with rows[i] = (its position in its
    table) * T + its table. The stride is a bound that depends on the batch shape only, the same
    on every rank: row-wise sharded lookups exchange equal blocks between ranks. Offsets and per-key
    sizes are passed in, so torchrec derives none of them."""
    batches, lookups = table_of_lookup.shape
    num_tables, keys = len(table_names), list(table_names)
    if num_tables == 1:
        lengths, offsets, rows = _single_table_layout(lookups)
        return [
            (
                KeyedJaggedTensor(
                    keys=keys, values=torch.from_numpy(ids[k]), lengths=lengths, offsets=offsets,
                    stride=lookups, length_per_key=[lookups], offset_per_key=[0, lookups],
                ),
                rows,
            )
            for k in range(batches)
        ]
    groups = batches * num_tables  # (batch, table)
    keys_flat = (np.arange(batches)[:, None] * num_tables + table_of_lookup).reshape(-1)
    order = np.argsort(_sort_keys(keys_flat, groups), kind="stable")  # by batch, then table, in lookup order
    per_group = np.bincount(keys_flat, minlength=groups)
    position = np.empty(keys_flat.shape[0], dtype=np.int64)
    position[order] = np.arange(keys_flat.shape[0]) - np.repeat(np.cumsum(per_group) - per_group, per_group)
    rows = (position.reshape(batches, lookups) * num_tables + table_of_lookup)
    values = ids.reshape(-1)[order].reshape(batches, lookups)  # each batch's lookups stay in its row
    per_key = per_group.reshape(batches, num_tables)
    lengths = (np.arange(stride) < per_key[:, :, None]).astype(np.int64).reshape(batches, -1)
    offsets = np.zeros((batches, lengths.shape[1] + 1), dtype=np.int64)
    np.cumsum(lengths, axis=1, out=offsets[:, 1:])
    key_offsets = np.zeros((batches, num_tables + 1), dtype=np.int64)
    np.cumsum(per_key, axis=1, out=key_offsets[:, 1:])
    return [
        (
            KeyedJaggedTensor(
                keys=keys,
                values=torch.from_numpy(values[k]),
                lengths=torch.from_numpy(lengths[k]),
                offsets=torch.from_numpy(offsets[k]),
                stride=stride,
                length_per_key=per_key[k].tolist(),
                offset_per_key=key_offsets[k].tolist(),
            ),
            torch.from_numpy(rows[k]),
        )
        for k in range(batches)
    ]


def edges_to_batches(
    edges: EdgeArrays,
    schema: GraphSchema,
    batch_size: int,
    in_batch_negatives: int = 0,
    global_negatives: int = 0,
    rng: Optional[np.random.Generator] = None,
    real_edges: Optional[int] = None,
) -> list[EdgeBatch]:
    """Consecutive batches of `batch_size` (already checked) edges, with their negatives sampled
    from `rng`, all prepared at once: numpy's cost per call, not per element, dominates batches of
    a few hundred edges. Only the first `real_edges` (default: all) serve as in-batch negatives;
    the rest are zero-weight padding."""
    rng = rng if rng is not None else np.random.default_rng()
    if batch_size < 1 or len(edges) % batch_size:
        raise ValueError(f"{len(edges)} edges do not make batches of {batch_size}")
    batches, size = len(edges) // batch_size, batch_size
    real = np.clip((len(edges) if real_edges is None else real_edges) - np.arange(batches) * size, 0, size)
    rels = edges.rel.astype(np.int64, copy=False)
    edge_tables = schema.relation_tables()[rels]  # [K * B, 2]: (lhs table, rhs table) per edge
    tables = [edge_tables[:, 0].reshape(batches, size), edge_tables[:, 1].reshape(batches, size)]
    ids = [edges.lhs.reshape(batches, size), edges.rhs.reshape(batches, size)]
    if global_negatives:
        sizes = schema.sizes_array()
        for side_table in (edge_tables[:, 0], edge_tables[:, 1]):
            tables.append(np.repeat(side_table, global_negatives).reshape(batches, -1))
            uniform = rng.integers(0, sizes[side_table][:, None], size=(batches * size, global_negatives))
            ids.append(uniform.reshape(batches, -1))
    rels = rels.reshape(batches, size)
    lhs_negatives, rhs_negatives = (
        _relation_negatives(rels, real, schema.num_relations, in_batch_negatives, rng) for _ in range(2)
    )
    weights = edges.weight.astype(np.float32, copy=False).reshape(batches, size)
    pair_weights = scored_pair_weights(weights, lhs_negatives, rhs_negatives, global_negatives)
    nodes = _nodes_kjts(
        np.concatenate(tables, axis=1),
        np.concatenate(ids, axis=1).astype(np.int64, copy=False),
        schema.table_names,
        stride=schema.max_lookups_per_table(size * (1 + global_negatives)),
    )
    labels = torch.ones(size, dtype=torch.float32)
    pair_labels = _pair_labels(size, pair_weights.shape[1])
    return [
        EdgeBatch(
            nodes=kjt,
            labels=labels,
            rels=torch.from_numpy(rels[k]),
            weights=torch.from_numpy(weights[k]),
            lhs_negatives=torch.from_numpy(lhs_negatives[k]),
            rhs_negatives=torch.from_numpy(rhs_negatives[k]),
            lookup_rows=lookup_rows,
            pair_labels=pair_labels,
            pair_weights=torch.from_numpy(pair_weights[k]),
        )
        for k, (kjt, lookup_rows) in enumerate(nodes)
    ]


def edges_to_batch(
    edges: EdgeArrays,
    schema: GraphSchema,
    in_batch_negatives: int = 0,
    global_negatives: int = 0,
    rng: Optional[np.random.Generator] = None,
    real_edges: Optional[int] = None,
) -> EdgeBatch:
    """One batch of all `edges` (see `edges_to_batches`)."""
    return edges_to_batches(edges, schema, len(edges), in_batch_negatives, global_negatives, rng, real_edges)[0]


# Batches are sampled together, up to this many, or this many lookups (2 + 2G per edge): small
# batches cost numpy calls, not elements (152 -> 65 us per batch of 500 edges in chunks of 64), while
# larger chunks only add memory traffic.
BATCHES_PREPARED_TOGETHER = 64
LOOKUPS_PREPARED_TOGETHER = 1 << 16


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
        for chunk in self._chunks(epoch):
            yield from chunk

    def _chunks(self, epoch: int) -> Iterator[list[EdgeBatch]]:
        """The epoch's batches, prepared (and handed over) a chunk at a time."""
        edges = self.edges()
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        order = rng.permutation(len(edges)) if self.shuffle else np.arange(len(edges))
        # The whole epoch in batch order at once (positions past the end wrap around: padding);
        # each chunk of batches is then a slice, not a gather of its own.
        total = self.num_batches * self.batch_size
        epoch_edges = edges.take(np.resize(order, total))
        epoch_edges.weight[len(edges):] = 0.0  # the padding weighs nothing
        lookups = self.batch_size * 2 * (1 + self.global_negatives)
        chunk = self.batch_size * max(1, min(BATCHES_PREPARED_TOGETHER, LOOKUPS_PREPARED_TOGETHER // lookups))
        for start in range(0, total, chunk):
            real = int(np.clip(len(edges) - start, 0, chunk))
            chosen = epoch_edges.take(slice(start, start + chunk))
            yield edges_to_batches(
                chosen, self.schema, self.batch_size, self.in_batch_negatives, self.global_negatives, rng, real
            )

    def __iter__(self) -> Iterator[EdgeBatch]:
        return self.batches(0)

    def __len__(self) -> int:
        return self.num_batches

    def _epoch_chunks(self, num_epochs: Optional[int]) -> Iterator[list[EdgeBatch]]:
        epoch = 0
        while num_epochs is None or epoch < num_epochs:
            yield from self._chunks(epoch)
            epoch += 1

    def dataloader(self, num_epochs: Optional[int] = 1) -> Iterator[EdgeBatch]:
        """Batches of `num_epochs` epochs in a row (None: forever), each shuffled anew. With
        `prefetch`, a background thread prepares the next chunk of batches (at least `prefetch`
        batches) while training consumes the current one: the same stream as without, handed
        over a chunk at a time, so the threads meet once per chunk, not once per step."""
        chunks = self._epoch_chunks(num_epochs)
        if self.prefetch > 0:
            self.edges()  # read (and check) in this thread: a bad file fails here, not mid-training
            chunks = BackgroundIterator(chunks, depth=self.prefetch, name="tml-twhin-edges", weight=len)
        return itertools.chain.from_iterable(chunks)
