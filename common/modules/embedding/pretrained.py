"""Initialise embedding tables from pretrained vectors: a tml checkpoint or exported Parquet vectors.

A table's `pretrained: {emb_name, embedding_snapshot_uri}` names a source table:
- a tml checkpoint (`<save_dir>/<step>`, any world size or sharding plan), or a save_dir (its newest
  complete checkpoint): the table whose state-dict key ends in `embedding_bags.<emb_name>.weight`,
  read whole on every rank with torch.distributed.checkpoint;
- exported vectors in Parquet with columns `id` (int64 row) and `vector` (list of floats): a file
  `*.parquet`, or a folder holding `<emb_name>.parquet` (what `tml.projects.twhin.embeddings export`
  writes), streamed in chunks.
Each rank copies the rows it holds (any sharding: table-wise, row-wise, column-wise, replicated).
Rows the source lacks keep their initialisation; they are counted and logged. A width other than
the table's, or an id outside the table, is an error naming both sides.

Call after sharding (tables on the meta device have no storage before) and before training; a run
that resumes from its own checkpoint then overwrites these values with its trained ones.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Protocol, Sequence

import numpy as np
import torch
from torch.distributed._shard.sharded_tensor import ShardedTensor

from tml.common import filesystem
from tml.common.checkpointing import read_metadata, resolve_checkpoint, restore
from tml.common.checkpointing.layout import join
from tml.core.config.errors import ConfigError
from tml.ml_logging.torch_logging import logging

CHUNK_ROWS = 65536


class PretrainedError(ConfigError):
    """A pretrained source that does not fit its table; the message names both."""


class _Snapshot(Protocol):
    emb_name: str
    embedding_snapshot_uri: str


class _Table(Protocol):
    name: str
    num_embeddings: int
    embedding_dim: int
    pretrained: Optional[_Snapshot]


def _weight_suffix(table: str) -> str:
    return f"embedding_bags.{table}.weight"


def _checkpoint_of(uri: str) -> Optional[str]:
    """The checkpoint `uri` is, or the newest complete one under it; None when it is neither."""
    if uri.endswith(".parquet") or not filesystem.exists(uri):
        return None
    try:
        return resolve_checkpoint(uri)
    except FileNotFoundError:
        return None


def _checkpoint_rows(checkpoint: str, emb_name: str) -> tuple[np.ndarray, np.ndarray]:
    keys = {
        key: entry
        for key, entry in read_metadata(checkpoint).state_dict_metadata.items()
        if key.endswith("." + _weight_suffix(emb_name)) and hasattr(entry, "size")
    }
    if len(keys) != 1:
        tables = sorted(
            key.rsplit(".", 2)[-2]
            for key in read_metadata(checkpoint).state_dict_metadata
            if ".embedding_bags." in key and key.endswith(".weight")
        )
        raise PretrainedError(
            f"checkpoint {checkpoint} has {'no' if not keys else 'several'} table '{emb_name}' "
            f"(keys ending in {_weight_suffix(emb_name)}); its tables: {tables}"
        )
    ((key, entry),) = keys.items()
    state = {key: torch.empty(tuple(entry.size), dtype=entry.properties.dtype)}
    restore(checkpoint, state, no_dist=True)
    weights = state[key].float().numpy()
    return np.arange(len(weights), dtype=np.int64), weights


def _parquet_path(uri: str, emb_name: str) -> str:
    path = uri if uri.endswith(".parquet") else join(uri, f"{emb_name}.parquet")
    if not filesystem.exists(path):
        raise PretrainedError(
            f"pretrained source {uri} is neither a tml checkpoint, a save_dir holding one, a Parquet file, "
            f"nor a folder with {emb_name}.parquet"
        )
    return path


def _parquet_chunks(path: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    from tml.common.parquet import open_parquet

    with open_parquet(path) as parquet:
        missing = [name for name in ("id", "vector") if name not in parquet.schema_arrow.names]
        if missing:
            raise PretrainedError(f"{path} lacks column(s) {missing}; pretrained vectors need 'id' and 'vector'")
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS, columns=["id", "vector"]):
            ids = batch.column(0).to_numpy(zero_copy_only=False).astype(np.int64)
            vectors = batch.column(1)
            if not (pa.types.is_list(vectors.type) or pa.types.is_fixed_size_list(vectors.type)
                    or pa.types.is_large_list(vectors.type)):
                raise PretrainedError(f"{path}: column 'vector' is {vectors.type}; expected lists of floats")
            lengths = np.unique(pc.list_value_length(vectors).to_numpy(zero_copy_only=False))
            if len(lengths) > 1:
                raise PretrainedError(f"{path}: vectors have different widths {lengths.tolist()}")
            width = int(lengths[0]) if len(lengths) else 0
            flat = vectors.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
            yield ids, flat.reshape(len(ids), width)


def source_chunks(snapshot: _Snapshot) -> tuple[str, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """(description, chunks of (row ids, vectors)) of a pretrained source."""
    uri, emb_name = snapshot.embedding_snapshot_uri, snapshot.emb_name
    checkpoint = _checkpoint_of(uri)
    if checkpoint is not None:
        return f"checkpoint {checkpoint} table '{emb_name}'", iter([_checkpoint_rows(checkpoint, emb_name)])
    path = _parquet_path(uri, emb_name)
    return f"vectors {path}", _parquet_chunks(path)


def _local_pieces(weight: Any) -> list[tuple[torch.Tensor, int, int]]:
    """(tensor, first row, first column) of each piece of the table this rank holds."""
    if isinstance(weight, ShardedTensor):
        return [(shard.tensor, *shard.metadata.shard_offsets) for shard in weight.local_shards()]
    from torch.distributed.tensor import DTensor

    if isinstance(weight, DTensor):
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

        _, offsets = compute_local_shape_and_global_offset(weight.shape, weight.device_mesh, weight.placements)
        return [(weight.to_local(), int(offsets[0]), int(offsets[1]))]
    return [(weight, 0, 0)]


def _table_weight(model: torch.nn.Module, table: str) -> Any:
    state = model.state_dict(keep_vars=True)
    found = [key for key in state if key == _weight_suffix(table) or key.endswith("." + _weight_suffix(table))]
    if len(found) != 1:
        raise PretrainedError(f"the model has {len(found)} weights for table '{table}' (keys ending in "
                              f"{_weight_suffix(table)}); expected one")
    return state[found[0]]


@torch.no_grad()
def load_pretrained_table(model: torch.nn.Module, table: _Table) -> int:
    """Copy `table.pretrained`'s rows into the model's table; returns the rows it lacked."""
    assert table.pretrained is not None
    description, chunks = source_chunks(table.pretrained)
    pieces = _local_pieces(_table_weight(model, table.name))
    covered = np.zeros(table.num_embeddings, dtype=bool)
    for ids, vectors in chunks:
        if vectors.shape[1] != table.embedding_dim:
            raise PretrainedError(
                f"table '{table.name}' has embedding_dim {table.embedding_dim} but its pretrained source "
                f"{description} has vectors of width {vectors.shape[1]}"
            )
        outside = ids[(ids < 0) | (ids >= table.num_embeddings)]
        if len(outside):
            raise PretrainedError(
                f"{description} has id {int(outside[0])} ({len(outside)} such ids), outside table "
                f"'{table.name}' of {table.num_embeddings} rows"
            )
        covered[ids] = True
        for tensor, first_row, first_col in pieces:
            rows, cols = tensor.shape
            mine = (ids >= first_row) & (ids < first_row + rows)
            if not mine.any():
                continue
            values = torch.from_numpy(np.ascontiguousarray(vectors[mine, first_col:first_col + cols]))
            index = torch.from_numpy(ids[mine] - first_row).to(tensor.device)
            tensor.index_copy_(0, index, values.to(device=tensor.device, dtype=tensor.dtype))
    missing = int((~covered).sum())
    logging.info(
        f"table '{table.name}': {table.num_embeddings - missing} of {table.num_embeddings} rows from "
        f"{description}; {missing} rows not in the source keep their initialisation"
    )
    return missing


def load_pretrained_tables(model: torch.nn.Module, tables: Sequence[_Table]) -> dict[str, int]:
    """Every table with `pretrained` set; returns table -> rows missing from its source."""
    return {table.name: load_pretrained_table(model, table) for table in tables if table.pretrained is not None}
