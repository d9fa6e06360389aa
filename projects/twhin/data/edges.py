"""Edge batches for the TwHIN model, laid out as PyTorch-BigGraph does, and the dataset that produces
them for one rank.

A batch holds edges of one table pair (lhs node type, rhs node type), in chunks of C edges. Every
edge of a chunk is scored, on each side, against the same candidates: the nodes of the chunk's first
N edges (in-batch negatives; an edge is never its own negative) and G nodes drawn uniformly from that
side's table once per chunk (uniform or "global" negatives). All negative scores of a chunk and side
are then one [C, D] x [D, C + G] matrix product, and 100 negatives per edge cost 2 + 2G/C lookups per
edge, not 2 + 200.

`ChunkLayout` says where everything is; the model reads it and re-derives nothing. Each side's
lookups are K blocks of C + G rows, one block per chunk: the chunk's C edge nodes, then its G uniform
draws. Under a table's KJT key come the lhs side's K(C + G) lookups, then the rhs side's when the
same table is on both sides; a table on one side only holds that side's lookups. Every key is padded
with empty bags up to one stride that depends on the batch shape only (the same on every rank:
sharded lookups exchange equal blocks between ranks).

Every batch of an `EdgesDataset` has exactly K * C edges on every rank: a group's last batch is
completed with zero-weight edges between uniform nodes (they still serve as negatives).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Iterator, Optional

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

# PyTorch-BigGraph's chunk size: edges that share their negatives when the config names none.
DEFAULT_CHUNK_SIZE = 50
SIDES = ("lhs", "rhs")


def resolve_chunk_size(batch_size: int, in_batch_negatives: int, chunk_size: Optional[int]) -> int:
    """Edges per chunk: `chunk_size`, else PBG's 50 (at least N, at most the batch)."""
    size = chunk_size or max(in_batch_negatives, min(DEFAULT_CHUNK_SIZE, batch_size))
    if in_batch_negatives > size:
        raise ValueError(
            f"in_batch_negatives={in_batch_negatives} needs chunks of at least as many edges; chunk_size={size}."
        )
    return size


@dataclasses.dataclass(frozen=True)
class ChunkLayout:
    """Shape and lookup order of a batch (see the module doc)."""

    table_names: tuple[str, ...]
    lhs_table: int
    rhs_table: int
    num_chunks: int  # K
    chunk_size: int  # C: edges that share their negatives
    in_batch_negatives: int  # N <= C: the first N edges' nodes are every edge's in-batch candidates
    uniform_negatives: int  # G per chunk and side, drawn uniformly from that side's table

    @property
    def num_edges(self) -> int:
        return self.num_chunks * self.chunk_size

    @property
    def block_size(self) -> int:
        """Rows per chunk and side: the chunk's C nodes, then its G uniform ones."""
        return self.chunk_size + self.uniform_negatives

    @property
    def side_lookups(self) -> int:
        return self.num_chunks * self.block_size

    def table(self, side: str) -> str:
        return self.table_names[self.lhs_table if side == "lhs" else self.rhs_table]

    def sides_of(self, table: str) -> tuple[str, ...]:
        """The sides whose lookups a table's key holds, in order."""
        return tuple(side for side in SIDES if self.table(side) == table)

    def start(self, side: str) -> int:
        """First lookup of `side` under its table's key."""
        return self.side_lookups if side == "rhs" and self.lhs_table == self.rhs_table else 0

    def lookups_per_table(self) -> list[int]:
        counts = [0] * len(self.table_names)
        counts[self.lhs_table] += self.side_lookups
        counts[self.rhs_table] += self.side_lookups
        return counts

    @functools.cached_property
    def negative_mask(self) -> torch.Tensor:
        """[C, C + G] True where column j of a chunk's block is a negative of the chunk's edge i:
        the first N edges' nodes except the edge's own, and every uniform node."""
        mask = torch.zeros(self.chunk_size, self.block_size, dtype=torch.bool)
        mask[:, : self.in_batch_negatives] = True
        mask[:, self.chunk_size :] = True
        own = torch.arange(min(self.in_batch_negatives, self.chunk_size))
        mask[own, own] = False
        return mask

    @functools.cached_property
    def negatives_per_edge(self) -> torch.Tensor:
        """[C] negatives per side of the edge at each chunk position (N + G, one less for the first N)."""
        return self.negative_mask.sum(1).to(torch.float32)

    # A batch moves between devices with its tensors; the layout is plain metadata.
    def to(self, *args: Any, **kwargs: Any) -> "ChunkLayout":
        return self


@dataclasses.dataclass
class EdgeBatch(DataclassBatch):
    nodes: KeyedJaggedTensor  # one key per table: that table's lookups in `layout` order
    labels: torch.Tensor  # [B] ones: every edge in the data is a positive
    rels: torch.Tensor  # [B] relation index, chunk-major (edge i is position i % C of chunk i // C)
    weights: torch.Tensor  # [B] edge weight; 0 for padding
    layout: Optional[ChunkLayout] = None

    @classmethod
    def feature_names(cls) -> list[str]:
        """The tensor fields: what moves between devices (the layout stays as it is)."""
        return [name for name in super().feature_names() if name != "layout"]

    @property
    def num_edges(self) -> int:
        return int(self.rels.shape[0])

    @property
    def batch_size(self) -> int:
        return self.num_edges

    def side_ids(self, side: str) -> torch.Tensor:
        """[K, C + G] ids of `side`'s lookups: each chunk's edge nodes, then its uniform draws."""
        layout = self.layout
        start = layout.start(side)
        values = self.nodes[layout.table(side)].values()
        return values[start : start + layout.side_lookups].view(layout.num_chunks, layout.block_size)

    def edge_nodes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(lhs ids, rhs ids) of the batch's edges."""
        c = self.layout.chunk_size
        return self.side_ids("lhs")[:, :c].reshape(-1), self.side_ids("rhs")[:, :c].reshape(-1)


def _table_pair_groups(schema: GraphSchema) -> tuple[np.ndarray, list[tuple[int, int]], list[int]]:
    """(group of each relation, (lhs table, rhs table) of each group, a relation of each group)."""
    pairs: list[tuple[int, int]] = []
    group_of_relation, first_relation = [], []
    for rel, pair in enumerate(zip(schema.relation_lhs, schema.relation_rhs)):
        if pair not in pairs:
            pairs.append(pair)
            first_relation.append(rel)
        group_of_relation.append(pairs.index(pair))
    return np.asarray(group_of_relation, dtype=np.int64), pairs, first_relation


def lookup_stride(schema: GraphSchema, side_lookups: int) -> int:
    """Bags per key: a table on both sides of a relation may get both sides' lookups."""
    both = any(lhs == rhs for lhs, rhs in zip(schema.relation_lhs, schema.relation_rhs))
    return side_lookups * (2 if both else 1)


@functools.lru_cache(maxsize=64)
def _kjt_shape(layout: ChunkLayout, stride: int) -> tuple[torch.Tensor, torch.Tensor, list[int], list[int]]:
    """(lengths, offsets, length per key, offset per key): the same for every batch of a layout."""
    per_key = layout.lookups_per_table()
    lengths = torch.cat([(torch.arange(stride) < count).to(torch.int64) for count in per_key])
    offsets = torch.zeros(lengths.shape[0] + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    key_offsets = np.concatenate([[0], np.cumsum(per_key)]).tolist()
    return lengths, offsets, per_key, key_offsets


@functools.lru_cache(maxsize=8)
def _ones(size: int) -> torch.Tensor:
    return torch.ones(size, dtype=torch.float32)


def build_batches(
    lhs: np.ndarray, rel: np.ndarray, rhs: np.ndarray, weight: np.ndarray,
    layout: ChunkLayout, schema: GraphSchema, rng: np.random.Generator,
) -> list[EdgeBatch]:
    """k batches of `layout`'s table pair from [k, K * C] edge arrays (chunk-major), with each
    chunk's uniform negatives drawn from `rng`; numpy works on all k at once (its cost per call,
    not per element, dominates batches of a few hundred edges)."""
    k = lhs.shape[0]
    chunks, c, g = layout.num_chunks, layout.chunk_size, layout.uniform_negatives
    sizes = schema.sizes_array()
    sides = {}
    for side, nodes in (("lhs", lhs), ("rhs", rhs)):
        block = np.empty((k, chunks, c + g), dtype=np.int64)
        block[:, :, :c] = nodes.reshape(k, chunks, c)
        table = layout.lhs_table if side == "lhs" else layout.rhs_table
        block[:, :, c:] = rng.integers(0, sizes[table], size=(k, chunks, g))
        sides[side] = block.reshape(k, -1)
    parts = []
    for table in range(len(layout.table_names)):
        parts += [sides[side] for side in SIDES if (layout.lhs_table if side == "lhs" else layout.rhs_table) == table]
    values = np.concatenate(parts, axis=1)
    stride = lookup_stride(schema, layout.side_lookups)
    lengths, offsets, per_key, key_offsets = _kjt_shape(layout, stride)
    labels = _ones(layout.num_edges)
    rels = rel.astype(np.int64, copy=False)
    weights = weight.astype(np.float32, copy=False)
    keys = list(layout.table_names)
    return [
        EdgeBatch(
            nodes=KeyedJaggedTensor(
                keys=keys, values=torch.from_numpy(values[i]), lengths=lengths, offsets=offsets,
                stride=stride, length_per_key=per_key, offset_per_key=key_offsets,
            ),
            labels=labels,
            rels=torch.from_numpy(rels[i]),
            weights=torch.from_numpy(weights[i]),
            layout=layout,
        )
        for i in range(k)
    ]


class BatchMaker:
    """Turns edges into batches of one shape: `batch_size` rounded up to whole chunks."""

    def __init__(
        self,
        schema: GraphSchema,
        batch_size: int,
        in_batch_negatives: int = 0,
        global_negatives: int = 0,
        chunk_size: Optional[int] = None,
    ) -> None:
        self.schema = schema
        chunk = resolve_chunk_size(batch_size, in_batch_negatives, chunk_size)
        self.group_of_relation, pairs, self.first_relation = _table_pair_groups(schema)
        self.layouts = [
            ChunkLayout(schema.table_names, lhs, rhs, -(-batch_size // chunk), chunk, in_batch_negatives,
                        global_negatives)
            for lhs, rhs in pairs
        ]
        self.edges_per_batch = self.layouts[0].num_edges

    @property
    def num_groups(self) -> int:
        return len(self.layouts)

    def make(self, edges: EdgeArrays, index: np.ndarray, groups: np.ndarray, rng: np.random.Generator) -> list[EdgeBatch]:
        """Batches `groups[i]` of edges `index[i]` ([k, E]; -1 = a zero-weight padding edge), in order."""
        out: list[Optional[EdgeBatch]] = [None] * len(groups)
        for group in np.unique(groups):
            rows = np.flatnonzero(groups == group)
            chosen = index[rows]
            real = chosen >= 0
            safe = np.where(real, chosen, 0)
            layout = self.layouts[group]
            sizes = self.schema.sizes_array()
            lhs = np.where(real, edges.lhs[safe], rng.integers(0, sizes[layout.lhs_table], size=chosen.shape))
            rhs = np.where(real, edges.rhs[safe], rng.integers(0, sizes[layout.rhs_table], size=chosen.shape))
            rel = np.where(real, edges.rel[safe], self.first_relation[group])
            weight = np.where(real, edges.weight[safe], 0.0)
            for row, batch in zip(rows, build_batches(lhs, rel, rhs, weight, layout, self.schema, rng)):
                out[row] = batch
        return out  # type: ignore[return-value]

    def group_of(self, edges: EdgeArrays) -> np.ndarray:
        return self.group_of_relation[edges.rel.astype(np.int64, copy=False)]


def edges_to_batches(
    edges: EdgeArrays,
    schema: GraphSchema,
    batch_size: int,
    in_batch_negatives: int = 0,
    global_negatives: int = 0,
    rng: Optional[np.random.Generator] = None,
    chunk_size: Optional[int] = None,
) -> list[EdgeBatch]:
    """The edges in order, grouped by table pair (stable), as batches of `batch_size` rounded up to
    whole chunks; each group's last batch is completed with zero-weight padding."""
    rng = rng if rng is not None else np.random.default_rng()
    maker = BatchMaker(schema, batch_size, in_batch_negatives, global_negatives, chunk_size)
    index, groups = _batch_index(maker.group_of(edges), np.arange(len(edges)), maker.edges_per_batch)
    return maker.make(edges, index, groups, rng)


def edges_to_batch(
    edges: EdgeArrays,
    schema: GraphSchema,
    in_batch_negatives: int = 0,
    global_negatives: int = 0,
    rng: Optional[np.random.Generator] = None,
    chunk_size: Optional[int] = None,
) -> EdgeBatch:
    """One batch of all `edges`, which must share a table pair (see `edges_to_batches`)."""
    batches = edges_to_batches(edges, schema, len(edges), in_batch_negatives, global_negatives, rng, chunk_size)
    if len(batches) != 1:
        raise ValueError(f"edges of {len(batches)} table pairs do not make one batch.")
    return batches[0]


def _batch_index(edge_groups: np.ndarray, order: np.ndarray, per_batch: int) -> tuple[np.ndarray, np.ndarray]:
    """([b, per_batch] edge indices, -1 = padding; [b] group) of the edges `order`, grouped stably."""
    grouped = order[np.argsort(edge_groups[order], kind="stable")]
    counts = np.bincount(edge_groups[order], minlength=int(edge_groups.max(initial=0)) + 1)
    rows, groups, start = [], [], 0
    for group, count in enumerate(counts):
        if count == 0:
            continue
        batches = -(-int(count) // per_batch)
        block = np.full(batches * per_batch, -1, dtype=np.int64)
        block[:count] = grouped[start : start + count]
        rows.append(block.reshape(batches, per_batch))
        groups.append(np.full(batches, group, dtype=np.int64))
        start += int(count)
    if not rows:
        return np.zeros((0, per_batch), dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(rows), np.concatenate(groups)


# Batches are prepared together, up to this many or this many lookups: small batches cost numpy
# calls, not elements, while larger groups only add memory traffic.
BATCHES_PREPARED_TOGETHER = 64
LOOKUPS_PREPARED_TOGETHER = 1 << 17


class EdgesDataset:
    """One rank's edges of the files matching `file_pattern`, as shuffled `EdgeBatch`es.

    The rank's part is read once (checked against the graph) and kept in memory; each epoch it is
    shuffled with a seed derived from (seed, epoch, rank) and cut into batches of one table pair
    each, whose order is shuffled too. All ranks yield the same number of batches per epoch (a
    sharded model exchanges equal blocks between ranks at every step): with several table pairs a
    rank may end its epoch with zero-weight batches.
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
        chunk_size: Optional[int] = None,
    ) -> None:
        self.file_pattern = file_pattern
        self.schema = schema
        self.maker = BatchMaker(schema, batch_size, in_batch_negatives, global_negatives, chunk_size)
        self.batch_size = self.maker.edges_per_batch
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
        # Cut per table pair, a rank's batches number at most this (the same bound on every rank).
        self.num_batches = -(-largest_share // self.batch_size) + self.maker.num_groups - 1
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
        """The epoch's batches, prepared (and handed over) several at a time."""
        edges = self.edges()
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        order = rng.permutation(len(edges)) if self.shuffle else np.arange(len(edges))
        index, groups = _batch_index(self.maker.group_of(edges), order, self.batch_size)
        missing = self.num_batches - len(groups)
        if missing > 0:  # zero-weight batches, so that every rank takes as many steps
            index = np.concatenate([index, np.full((missing, self.batch_size), -1, dtype=np.int64)])
            groups = np.concatenate([groups, np.zeros(missing, dtype=np.int64)])
        if self.shuffle and self.maker.num_groups > 1:
            mixed = rng.permutation(len(groups))
            index, groups = index[mixed], groups[mixed]
        lookups = 2 * self.maker.layouts[0].side_lookups
        step = max(1, min(BATCHES_PREPARED_TOGETHER, LOOKUPS_PREPARED_TOGETHER // lookups))
        for start in range(0, len(groups), step):
            yield self.maker.make(edges, index[start : start + step], groups[start : start + step], rng)

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
        `prefetch`, a background thread prepares the next batches (at least `prefetch`) while
        training consumes the current ones: the same stream as without, handed over several
        batches at a time, so the threads meet rarely."""
        chunks = self._epoch_chunks(num_epochs)
        if self.prefetch > 0:
            self.edges()  # read (and check) in this thread: a bad file fails here, not mid-training
            chunks = BackgroundIterator(chunks, depth=self.prefetch, name="tml-twhin-edges", weight=len)
        return itertools.chain.from_iterable(chunks)
