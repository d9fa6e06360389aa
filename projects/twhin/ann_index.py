"""Approximate nearest-neighbour indexes (faiss) over exported TwHIN tables, saved beside the export.

Exact search (one matrix product per chunk of rows, `embeddings.nearest`) costs rows x dim per query:
fine for thousands of rows, too slow for millions. faiss (the optional `faiss-cpu` package) answers
from an index built once:
- HNSW (a graph of neighbours; no training, high recall, memory ~ rows x (dim + 2 M) floats) for
  tables up to `IVF_MIN_ROWS` rows, where its build time (rows log rows) stays in minutes;
- IVF-Flat (k-means cells, `nprobe` of them scanned per query; trains on a sample, builds in
  seconds) from `IVF_MIN_ROWS` rows on;
- below `APPROXIMATE_MIN_ROWS` rows no index is built: exact search is fast and exact.
An index covers one table and one metric (`cosine`: vectors normalized, inner product; `dot`: raw
inner product, the ranking the `translation` and `dot` operators give a fixed query) and is saved
as `<table>.<metric>.faiss` with `<table>.<metric>.faiss.json` (kind, parameters, and the size and
modification time of the table's Parquet file, so that a stale index is refused, not used).
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

import numpy as np

APPROXIMATE_MIN_ROWS = 50_000
IVF_MIN_ROWS = 1_000_000
METRICS = ("cosine", "dot")
KINDS = ("auto", "exact", "hnsw", "ivf")
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128
IVF_TRAIN_POINTS_PER_CELL = 64
INSTALL_HINT = ".venv/bin/pip install faiss-cpu==1.15.1 (the optional extra: pip install 'tml[faiss]')"


def import_faiss() -> Any:
    try:
        import faiss  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise ImportError(f"approximate nearest-neighbour search needs faiss: {INSTALL_HINT}") from None
    return faiss


def choose_kind(rows: int) -> str:
    """'exact' for small tables, 'hnsw' up to IVF_MIN_ROWS rows, 'ivf' beyond."""
    if rows < APPROXIMATE_MIN_ROWS:
        return "exact"
    return "hnsw" if rows < IVF_MIN_ROWS else "ivf"


def ivf_cells(rows: int) -> int:
    """About 4 sqrt(rows) cells (faiss's guidance), a power of two, at least 16."""
    return max(16, 2 ** round(math.log2(4 * math.sqrt(max(rows, 1)))))


def default_nprobe(cells: int) -> int:
    """Cells scanned per query: 1/16 of them (at least 8). On structureless random vectors (the
    bench) that finds about two thirds of the exact top 10; real embeddings cluster, and do better."""
    return max(8, cells // 16)


def prepare_vectors(vectors: np.ndarray, metric: str) -> np.ndarray:
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got '{metric}'")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
    return vectors


def build_index(vectors: np.ndarray, metric: str = "cosine", kind: str = "auto", *, seed: int = 0,
                nprobe: Optional[int] = None, ef_search: int = HNSW_EF_SEARCH) -> tuple[Any, dict[str, Any]]:
    """A faiss index over `vectors` (row i has id i) and its description; kind 'exact' is faiss's
    flat index (used when a caller asks for one explicitly)."""
    if kind not in KINDS:
        raise ValueError(f"index kind must be one of {KINDS}, got '{kind}'")
    faiss = import_faiss()
    data = prepare_vectors(vectors, metric)
    rows, dim = data.shape
    kind = choose_kind(rows) if kind == "auto" else kind
    info: dict[str, Any] = {"kind": kind, "metric": metric, "rows": rows, "dim": dim}
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = ef_search
        info.update(m=HNSW_M, ef_construction=HNSW_EF_CONSTRUCTION, ef_search=ef_search)
    else:
        cells = min(ivf_cells(rows), max(1, rows // 39))  # faiss wants >= 39 training points per cell
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, cells, faiss.METRIC_INNER_PRODUCT)
        sample = min(rows, cells * IVF_TRAIN_POINTS_PER_CELL)
        picked = np.random.default_rng(seed).choice(rows, size=sample, replace=False) if sample < rows else slice(None)
        index.train(data[picked])
        index.nprobe = nprobe or default_nprobe(cells)
        info.update(cells=cells, nprobe=index.nprobe, train_points=int(sample))
    index.add(data)
    return index, info


def search(index: Any, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """([n, k] row ids, [n, k] scores); -1 ids (and -inf scores) where fewer than k were found."""
    distances, ids = index.search(prepare_vectors(queries, metric), k)
    distances = np.where(ids < 0, -np.inf, distances)
    return ids, distances


def set_search_effort(index: Any, info: dict[str, Any], nprobe: Optional[int] = None,
                      ef_search: Optional[int] = None) -> None:
    """Change how much of the index a query scans (IVF nprobe, HNSW efSearch) without rebuilding."""
    if info["kind"] == "ivf" and nprobe:
        index.nprobe = nprobe
        info["nprobe"] = nprobe
    if info["kind"] == "hnsw" and ef_search:
        index.hnsw.efSearch = ef_search
        info["ef_search"] = ef_search


# ---------------------------------------------------------------------------------- saved beside the export


def index_paths(export_dir: str, table: str, metric: str) -> tuple[str, str]:
    base = os.path.join(export_dir, f"{table}.{metric}.faiss")
    return base, base + ".json"


def _table_stamp(export_dir: str, table: str) -> dict[str, int]:
    stat = os.stat(os.path.join(export_dir, f"{table}.parquet"))
    return {"parquet_bytes": int(stat.st_size), "parquet_mtime_ns": int(stat.st_mtime_ns)}


def save_index(index: Any, info: dict[str, Any], export_dir: str, table: str) -> str:
    """Write the index and its description beside `<table>.parquet`; returns the index path."""
    faiss = import_faiss()
    path, info_path = index_paths(export_dir, table, info["metric"])
    faiss.write_index(index, path + ".tmp")
    os.replace(path + ".tmp", path)
    with open(info_path, "w") as stream:
        json.dump({**info, "table": table, **_table_stamp(export_dir, table)}, stream, indent=2)
    return path


def load_index(export_dir: str, table: str, metric: str) -> Optional[tuple[Any, dict[str, Any]]]:
    """The saved index of (table, metric) and its description; None when none was built. An index
    older than its table's Parquet file is an error (rebuild it)."""
    path, info_path = index_paths(export_dir, table, metric)
    if not (os.path.exists(path) and os.path.exists(info_path)):
        return None
    with open(info_path) as stream:
        info = json.load(stream)
    stamp = _table_stamp(export_dir, table)
    if any(info.get(key) != value for key, value in stamp.items()):
        raise ValueError(
            f"{path} was built from another version of {table}.parquet; rebuild it: "
            f"python -m tml.projects.twhin.embeddings index --source {export_dir} --table {table} --metric {metric}"
        )
    index = import_faiss().read_index(path)
    set_search_effort(index, info, info.get("nprobe"), info.get("ef_search"))
    return index, info
