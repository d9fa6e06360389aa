"""Embeddings out of a TwHIN run: export tables to Parquet, look rows up, find nearest neighbours
(the library behind the `embeddings` command, `python -m tml.projects.twhin.embeddings`).

The kinds of `source` (checkpoint, save directory, export directory) and how checkpoints are read
without building the model are described in `embeddings.py`, the command's module (its `--help`).

`build_nearest_index` builds a faiss index of an exported table (HNSW or IVF by size, see
`ann_index`) and saves it beside the export; `nearest` then uses it for that table unless
`exact=True`. Without a saved index (the default, and for small tables) `nearest` is exact.
"""
from __future__ import annotations

import json
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from tml.common import filesystem
from tml.common.checkpointing import read_metadata, resolve_checkpoint, restore
from tml.common.checkpointing.layout import join
from tml.core.optimizers import table_of_parameter
from tml.projects.twhin.models.models import TRANSLATION_PARAM

EXPORT_METADATA = "embeddings.json"
MODEL_KEY = "model"
DEFAULT_CHUNK_ROWS = 65536


# ---------------------------------------------------------------------------------- sources


def _is_export(source: str) -> bool:
    return filesystem.exists(join(source, EXPORT_METADATA))


def _checkpoint_of(source: str) -> str:
    """`source` as a checkpoint, naming the export form too when it is neither."""
    try:
        return resolve_checkpoint(source)
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{source} is neither an embeddings export ({EXPORT_METADATA}) nor a checkpoint: {error}"
        ) from None


TensorEntry = tuple[str, tuple[int, ...], torch.dtype]  # (DCP key, global shape, stored dtype)


def _checkpoint_keys(checkpoint: str) -> dict[str, TensorEntry]:
    """table -> its entry, and the relation vectors' entry under TRANSLATION_PARAM."""
    found: dict[str, TensorEntry] = {}
    for key, entry in read_metadata(checkpoint).state_dict_metadata.items():
        if not key.startswith(MODEL_KEY + ".") or not hasattr(entry, "size"):
            continue
        table = table_of_parameter(key)
        if table is not None:
            found[table] = (key, tuple(entry.size), entry.properties.dtype)
        elif key.split(".")[-1] == TRANSLATION_PARAM:
            found[TRANSLATION_PARAM] = (key, tuple(entry.size), entry.properties.dtype)
    return found


def _load_checkpoint_tensor(checkpoint: str, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    state = {key: torch.empty(shape, dtype=dtype)}
    restore(checkpoint, state, no_dist=True)
    return state[key].float()


def checkpoint_tables(checkpoint: str) -> list[str]:
    return sorted(name for name in _checkpoint_keys(checkpoint) if name != TRANSLATION_PARAM)


def load_table(source: str, table: str) -> np.ndarray:
    """[rows, dim] float32 weights of `table` from any source."""
    if _is_export(source):
        ids, vectors = _read_export(source, table)
        full = np.zeros((int(ids.max()) + 1 if ids.size else 0, vectors.shape[1]), dtype=np.float32)
        full[ids] = vectors
        return full
    checkpoint = _checkpoint_of(source)
    keys = _checkpoint_keys(checkpoint)
    if table not in keys:
        raise KeyError(f"checkpoint {checkpoint} has no table '{table}'; tables: {checkpoint_tables(checkpoint)}.")
    return _load_checkpoint_tensor(checkpoint, *keys[table]).numpy()


def _export_path(source: str, table: str) -> str:
    path = join(source, f"{table}.parquet")
    if not filesystem.exists(path):
        with filesystem.open_file(join(source, EXPORT_METADATA), "r") as stream:
            tables = list(json.load(stream)["tables"])
        raise KeyError(f"export {source} has no table '{table}'; tables: {tables}.")
    return path


def _vectors(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return values.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, dim)


def _dim_of(schema: pa.Schema) -> int:
    return schema.field("vector").type.list_size


def _read_export(source: str, table: str, ids: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a whole exported table, or only of `ids` (streamed: memory stays bounded)."""
    found_ids, found_vectors = [], []
    wanted = None if ids is None else pa.array(ids, type=pa.int64())
    for chunk_ids, vectors in iter_table_chunks(source, table):
        if wanted is not None:
            keep = pc.is_in(pa.array(chunk_ids), value_set=wanted).to_numpy(zero_copy_only=False)
            chunk_ids, vectors = chunk_ids[keep], vectors[keep]
        found_ids.append(chunk_ids)
        found_vectors.append(vectors)
    return np.concatenate(found_ids), np.concatenate(found_vectors)


def iter_table_chunks(
    source: str, table: str, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, [n, dim] vectors) pieces of a table; an export is streamed, never read whole."""
    if _is_export(source):
        with filesystem.open_file(_export_path(source, table), "rb") as stream:
            parquet = pq.ParquetFile(stream)
            dim = _dim_of(parquet.schema_arrow)
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=["id", "vector"]):
                yield batch.column(0).to_numpy(), _vectors(batch.column(1), dim)
        return
    weights = load_table(source, table)
    for start in range(0, weights.shape[0], chunk_rows):
        stop = min(start + chunk_rows, weights.shape[0])
        yield np.arange(start, stop, dtype=np.int64), weights[start:stop]


# ---------------------------------------------------------------------------------- export


def _vector_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), type=pa.float32()), matrix.shape[1])


def export_embeddings(
    source: str,
    out_dir: str,
    tables: Optional[Sequence[str]] = None,
    relation_names: Optional[Sequence[str]] = None,
    row_group_size: int = DEFAULT_CHUNK_ROWS,
) -> dict[str, str]:
    """Write each table of the checkpoint `source` to `<out_dir>/<table>.parquet` (id, vector), the
    relation vectors to `relations.parquet` (rel, name, vector) and `embeddings.json`. Returns
    table -> path."""
    checkpoint = _checkpoint_of(source)
    keys = _checkpoint_keys(checkpoint)
    available = checkpoint_tables(checkpoint)
    chosen = list(tables) if tables else available
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise KeyError(f"checkpoint {checkpoint} has no tables {unknown}; tables: {available}.")
    fs = filesystem.infer_fs(out_dir)
    fs.makedirs(out_dir, exist_ok=True)
    written: dict[str, str] = {}
    sizes: dict[str, list[int]] = {}
    for table in chosen:
        weights = _load_checkpoint_tensor(checkpoint, *keys[table]).numpy()
        rows, dim = weights.shape
        data = pa.table({"id": pa.array(np.arange(rows, dtype=np.int64)), "vector": _vector_column(weights)})
        path = join(out_dir, f"{table}.parquet")
        with filesystem.open_file(path, "wb") as sink:
            pq.write_table(data, sink, row_group_size=row_group_size)
        written[table], sizes[table] = path, [rows, dim]
    if TRANSLATION_PARAM in keys:
        vectors = _load_checkpoint_tensor(checkpoint, *keys[TRANSLATION_PARAM]).numpy()
        names = list(relation_names) if relation_names else [None] * vectors.shape[0]
        if relation_names and vectors.shape[0] == 2 * len(names):  # reciprocal relations (relation_aware)
            names += [f"{name}:reverse" for name in relation_names]
        if len(names) != vectors.shape[0]:
            raise ValueError(f"{len(names)} relation names given for {vectors.shape[0]} relation vectors.")
        data = pa.table({
            "rel": pa.array(np.arange(vectors.shape[0], dtype=np.int64)),
            "name": pa.array(names, type=pa.string()),
            "vector": _vector_column(vectors),
        })
        with filesystem.open_file(join(out_dir, "relations.parquet"), "wb") as sink:
            pq.write_table(data, sink)
    with filesystem.open_file(join(out_dir, EXPORT_METADATA), "w") as stream:
        json.dump({"checkpoint": checkpoint, "tables": sizes}, stream, indent=2)
    return written


# ---------------------------------------------------------------------------------- look-ups


def _normalized(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _check_ids(ids: np.ndarray, rows: int, table: str, source: str) -> None:
    bad = (ids < 0) | (ids >= rows)
    if bad.any():
        raise KeyError(f"id {int(ids[bad][0])} is not in table '{table}' of {source} (ids 0..{rows - 1}).")


def get_embeddings(
    ids: Iterable[int], table: str, source: str, normalize: bool = False
) -> dict[int, np.ndarray]:
    """id -> the table row (a float32 vector; unit length with `normalize`)."""
    wanted = np.unique(np.asarray(list(ids), dtype=np.int64))
    if _is_export(source):
        found_ids, vectors = _read_export(source, table, wanted)
        missing = np.setdiff1d(wanted, found_ids)
        if missing.size:
            raise KeyError(f"id {int(missing[0])} is not in table '{table}' of {source}.")
    else:
        weights = load_table(source, table)
        _check_ids(wanted, weights.shape[0], table, source)
        found_ids, vectors = wanted, weights[wanted]
    if normalize:
        vectors = _normalized(vectors)
    return {int(i): vector.copy() for i, vector in zip(found_ids, vectors)}


def build_nearest_index(source: str, table: str, kind: str = "auto", metric: str = "cosine") -> Optional[str]:
    """Build and save the approximate index of an exported table (`ann_index`); returns its path,
    or None when the table is small enough for exact search (kind 'auto' below
    ann_index.APPROXIMATE_MIN_ROWS rows) and no index is written."""
    from tml.projects.twhin import ann_index

    if not _is_export(source):
        raise ValueError(f"{source} is not an embeddings export; the index is saved beside one (run `export` first).")
    ids, vectors = _read_export(source, table)
    if not np.array_equal(ids, np.arange(len(ids))):
        raise ValueError(f"{source}/{table}.parquet does not hold ids 0..{len(ids) - 1} in order; re-export it.")
    if kind == "auto" and ann_index.choose_kind(len(ids)) == "exact":
        return None
    index, info = ann_index.build_index(vectors, metric, kind)
    return ann_index.save_index(index, info, source, table)


def _nearest_approximate(
    query_ids: np.ndarray, queries: np.ndarray, k: int, index, exclude_self: bool
) -> dict[int, list[tuple[int, float]]]:
    from tml.projects.twhin import ann_index

    found, scores = ann_index.search(index, queries, k + int(exclude_self), "cosine")
    result = {}
    for query, row_ids, row_scores in zip(query_ids.tolist(), found.tolist(), scores.tolist()):
        pairs = [(i, s) for i, s in zip(row_ids, row_scores) if i >= 0 and not (exclude_self and i == query)]
        result[int(query)] = [(int(i), float(s)) for i, s in pairs[:k]]
    return result


def nearest(
    ids: Iterable[int],
    k: int,
    table: str,
    source: str,
    exclude_self: bool = True,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    exact: bool = False,
) -> dict[int, list[tuple[int, float]]]:
    """id -> its k most cosine-similar rows of `table` as (id, similarity), best first. With a saved
    index beside an export (`build_nearest_index`) and not `exact`: the index's approximate answer.
    Otherwise exact: the table is scanned in chunks of `chunk_rows`, keeping a running top-k."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}.")
    queries_by_id = get_embeddings(ids, table, source, normalize=True)
    query_ids = np.array(list(queries_by_id), dtype=np.int64)
    if not exact and _is_export(source) and filesystem.is_local_fs(filesystem.infer_fs(source)):
        from tml.projects.twhin import ann_index

        saved = ann_index.load_index(source, table, "cosine")
        if saved is not None:
            queries_matrix = np.stack([queries_by_id[int(i)] for i in query_ids])
            return _nearest_approximate(query_ids, queries_matrix, k, saved[0], exclude_self)
    queries = torch.from_numpy(np.stack([queries_by_id[int(i)] for i in query_ids]))
    best_scores = torch.full((len(query_ids), 0), float("-inf"))
    best_ids = torch.zeros((len(query_ids), 0), dtype=torch.long)
    for chunk_ids, vectors in iter_table_chunks(source, table, chunk_rows):
        scores = queries @ torch.from_numpy(_normalized(vectors)).T
        candidate_ids = torch.tensor(chunk_ids, dtype=torch.long).expand(len(query_ids), -1)
        if exclude_self:
            scores = scores.masked_fill(candidate_ids == torch.from_numpy(query_ids).unsqueeze(1), float("-inf"))
        scores = torch.cat([best_scores, scores], 1)
        candidate_ids = torch.cat([best_ids, candidate_ids], 1)
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        best_scores, best_ids = top.values, torch.gather(candidate_ids, 1, top.indices)
    return {
        int(query): [(int(i), float(s)) for i, s in zip(row_ids, row_scores) if s != float("-inf")]
        for query, row_ids, row_scores in zip(query_ids, best_ids.tolist(), best_scores.tolist())
    }
