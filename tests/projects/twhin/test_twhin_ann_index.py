"""The faiss index of `nearest`: recall against exact search on a small case, choice by size, saving."""
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

faiss = pytest.importorskip("faiss")

from tml.projects.twhin import ann_index, embeddings  # noqa: E402


def _clustered(rows, dim=16, clusters=40, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    return (centres[rng.integers(0, clusters, rows)] + 0.3 * rng.normal(size=(rows, dim))).astype(np.float32)


def _exact_top(vectors, queries, k):
    data = ann_index.prepare_vectors(vectors, "cosine")
    scores = ann_index.prepare_vectors(queries, "cosine") @ data.T
    return np.argsort(-scores, axis=1)[:, :k]


def _recall(found, truth):
    return np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth)])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_index_recall_against_exact(kind):
    vectors = _clustered(4000)
    queries = vectors[:200] + 0.05
    index, info = ann_index.build_index(vectors, "cosine", kind)
    assert info["kind"] == kind and info["rows"] == 4000
    found, scores = ann_index.search(index, queries, 10, "cosine")
    assert _recall(found, _exact_top(vectors, queries, 10)) >= 0.9
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    # a random-choice "index" would be far off: the test can fail
    assert _recall(np.random.default_rng(0).integers(0, 4000, (200, 10)), _exact_top(vectors, queries, 10)) < 0.05


def test_kind_chosen_by_size():
    assert ann_index.choose_kind(1_000) == "exact"
    assert ann_index.choose_kind(ann_index.APPROXIMATE_MIN_ROWS) == "hnsw"
    assert ann_index.choose_kind(ann_index.IVF_MIN_ROWS) == "ivf"
    assert ann_index.ivf_cells(1_000_000) == 4096


def _write_export(folder, vectors):
    folder.mkdir(parents=True, exist_ok=True)
    column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    pq.write_table(pa.table({"id": pa.array(np.arange(len(vectors)), pa.int64()), "vector": column}), folder / "item.parquet")
    (folder / embeddings.EXPORT_METADATA).write_text('{"tables": {"item": [%d, %d]}}' % vectors.shape)


def test_saved_index_is_used_by_nearest_and_refused_when_stale(tmp_path):
    vectors = _clustered(3000, seed=1)
    export = tmp_path / "export"
    _write_export(export, vectors)
    assert embeddings.build_nearest_index(str(export), "item") is None  # small: exact search stays
    assert not os.path.exists(ann_index.index_paths(str(export), "item", "cosine")[0])
    path = embeddings.build_nearest_index(str(export), "item", kind="hnsw")
    assert os.path.exists(path) and os.path.exists(path + ".json")
    ids = list(range(0, 3000, 30))
    approximate = embeddings.nearest(ids, 10, "item", str(export))
    exact = embeddings.nearest(ids, 10, "item", str(export), exact=True)
    assert all(q not in [i for i, _ in approximate[q]] for q in ids)  # itself excluded on both paths
    recall = np.mean([len({i for i, _ in approximate[q]} & {i for i, _ in exact[q]}) / 10 for q in ids])
    assert recall >= 0.9
    _write_export(export, vectors[::-1].copy())  # the table changed after the index was built
    os.utime(export / "item.parquet", ns=(1, 1))
    with pytest.raises(ValueError, match="rebuild it"):
        embeddings.nearest([0], 5, "item", str(export))
