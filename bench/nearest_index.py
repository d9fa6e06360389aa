"""Approximate nearest-neighbour index (faiss, `projects/twhin/ann_index.py`) vs exact search.

    .venv/bin/python bench/nearest_index.py [--rows 1000000 --dim 64 --queries 200 --k 10 --repeats 5]

Data: `--rows` random Gaussian vectors of `--dim` (no cluster structure: the hardest case for an
index) and `--queries` query vectors from the same distribution; cosine similarity.
- Exact (the baseline): what `embeddings.nearest` does without an index: the normalized table in
  chunks of 65,536 rows, one torch matrix product per chunk, a running top-k.
- Index: `ann_index.build_index(kind="auto")`, which at >= 1 M rows is IVF-Flat (4096 cells,
  trained on 262,144 sampled rows, nprobe 256); the search is `ann_index.search`.
Outside the timed region: generating and normalizing the data, building the index (its time is
reported once). Inside: one search of all queries (normalizing the queries included on both sides).
Both run on the same thread count (`--threads`, set once), interleaved, `--repeats` times; medians.
recall@k = |index's top k ∩ exact top k| / k, averaged over the queries. The index's other
settings (nprobe at 1/2 and 2x the default) and HNSW on `--hnsw_rows` rows (its build is rows log
rows: a 1 M-row build takes many minutes on 2 cores) are measured once after the headline.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tml.core.precision import cpu_model_and_flags  # noqa: E402
from tml.projects.twhin import ann_index  # noqa: E402


def cpu_description() -> str:
    model, flags = cpu_model_and_flags()
    wanted = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}; flags: {' '.join(wanted) or 'none of avx2/avx512f/avx512_bf16/amx_bf16'}; cores: {os.cpu_count()}"


def exact_top_k(table: torch.Tensor, queries: np.ndarray, k: int, chunk_rows: int = 65536) -> np.ndarray:
    q = torch.from_numpy(ann_index.prepare_vectors(queries, "cosine"))
    best_scores = torch.full((len(q), 0), float("-inf"))
    best_ids = torch.zeros((len(q), 0), dtype=torch.long)
    for start in range(0, table.shape[0], chunk_rows):
        scores = torch.cat([best_scores, q @ table[start:start + chunk_rows].T], 1)
        ids = torch.cat([best_ids, torch.arange(start, min(start + chunk_rows, table.shape[0])).expand(len(q), -1)], 1)
        top = torch.topk(scores, k, dim=1)
        best_scores, best_ids = top.values, torch.gather(ids, 1, top.indices)
    return best_ids.numpy()


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / truth.shape[1] for f, t in zip(found, truth)]))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hnsw_rows", type=int, default=50_000, help="0 skips the HNSW line.")
    args = parser.parse_args()
    faiss = ann_index.import_faiss()
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    print(f"cpu: {cpu_description()}; threads: {args.threads}; faiss {faiss.__version__}, torch {torch.__version__}")

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    table = torch.from_numpy(ann_index.prepare_vectors(vectors, "cosine"))

    index_build_s, (index, info) = timed(lambda: ann_index.build_index(vectors, "cosine", "auto"))
    print(f"index: {info}; built in {index_build_s:.1f} s")

    exact_times, index_times, truth, found = [], [], None, None
    for _ in range(args.repeats):  # interleaved
        seconds, truth = timed(lambda: exact_top_k(table, queries, args.k))
        exact_times.append(seconds)
        seconds, (found, _) = timed(lambda: ann_index.search(index, queries, args.k, "cosine"))
        index_times.append(seconds)
    exact_qps = args.queries / statistics.median(exact_times)
    index_qps = args.queries / statistics.median(index_times)
    headline_recall = recall(found, truth)
    print(f"exact: median {statistics.median(exact_times):.3f} s (min {min(exact_times):.3f}) for {args.queries} queries")
    print(f"{info['kind']}: median {statistics.median(index_times):.4f} s (min {min(index_times):.4f}); recall@{args.k} {headline_recall:.3f}")

    extra: list[str] = []
    if info["kind"] == "ivf":
        default = info["nprobe"]
        for nprobe in (default // 2, default * 2):
            ann_index.set_search_effort(index, info, nprobe=nprobe)
            seconds, (ids, _) = timed(lambda: ann_index.search(index, queries, args.k, "cosine"))
            print(f"ivf nprobe {nprobe}: {args.queries / seconds:,.0f} queries/s, recall@{args.k} {recall(ids, truth):.3f}")
            extra.append(f"RESULT ivf_nprobe{nprobe}_recall_at_{args.k}={recall(ids, truth):.4f}")
            extra.append(f"RESULT ivf_nprobe{nprobe}_queries_per_s={args.queries / seconds:.1f}")
        ann_index.set_search_effort(index, info, nprobe=default)
    del index
    if args.hnsw_rows:
        small = vectors[: args.hnsw_rows]
        build_s, (hnsw, hnsw_info) = timed(lambda: ann_index.build_index(small, "cosine", "hnsw"))
        small_truth = exact_top_k(table[: args.hnsw_rows], queries, args.k)
        seconds, (ids, _) = timed(lambda: ann_index.search(hnsw, queries, args.k, "cosine"))
        exact_s, _ = timed(lambda: exact_top_k(table[: args.hnsw_rows], queries, args.k))
        print(f"hnsw on {args.hnsw_rows} rows: built in {build_s:.1f} s; {args.queries / seconds:,.0f} queries/s "
              f"(exact {args.queries / exact_s:,.0f}); recall@{args.k} {recall(ids, small_truth):.3f}")
        extra.append(f"RESULT hnsw_{args.hnsw_rows}_rows_recall_at_{args.k}={recall(ids, small_truth):.4f}")
        extra.append(f"RESULT hnsw_{args.hnsw_rows}_rows_queries_per_s_ratio={exact_s / seconds:.2f}")
        extra.append(f"RESULT hnsw_{args.hnsw_rows}_rows_build_s={build_s:.1f}")

    print(f"RESULT index_queries_per_s_ratio={index_qps / exact_qps:.2f}")
    print(f"RESULT index_recall_at_{args.k}={headline_recall:.4f}")
    print(f"RESULT index_queries_per_s={index_qps:.1f}")
    print(f"RESULT exact_queries_per_s={exact_qps:.1f}")
    print(f"RESULT index_build_s={index_build_s:.1f}")
    for line in extra:
        print(line)


if __name__ == "__main__":
    main()
