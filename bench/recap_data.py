"""Rows/s of RecapDataset (Parquet -> ready RecapBatches) against pyarrow.parquet.read_table.

Full-size segdense layout (6000 continuous, 512 binary, 320 discrete, three 200-d embeddings, 13
labels, 3 ids) with the original config's preprocessing (truncation to 2117 / 59) and shuffle buffer
(1024). Both sides read the same files and columns in the same process, interleaved, several
repeats; the ratios are medians of per-repeat ratios. The training-step ceiling (examples/s a CPU can train the Heavy
Ranker at: torch.mm GFLOP/s measured here / 618 MFLOP per example) shows whether the loader at
batch 512 could be a bottleneck.

    .venv/bin/python bench/recap_data.py [--rows 49152] [--files 12] [--large_batch 8192] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time

import torch

# Before pyarrow loads, as the entry points do: Arrow's allocator keeps the memory it frees.
from tml.common.allocator import keep_arrow_freed_memory

keep_arrow_freed_memory()

from tml.projects.home.recap.data.config import RecapDataConfig  # noqa: E402
from tml.projects.home.recap.data.dataset import RecapDataset  # noqa: E402
from tml.projects.home.recap.data.generate_random_data import generate_random_data  # noqa: E402
from tml.projects.home.recap.data.segdense import plan_features  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402,I001

TASKS = [f"recap.engagement.label_{i:02d}" for i in range(13)]
FEATURES = [
    ("discrete_vals", "int64_list", 320),
    ("cont_vals", "float_list", 6000),
    ("binary_vals", "int64_list", 512),
    ("user_eng_emb", "float_list", 200),
    ("author_emb", "float_list", 200),
    ("user_emb", "float_list", 200),
    ("meta.author_id", "int64_list", 1),
    ("meta.user_id", "int64_list", 1),
    ("meta.tweet_id", "int64_list", 1),
] + [(task, "int64_list", 1) for task in TASKS]
RENAMES = {
    "continuous": "cont_vals", "binary": "binary_vals", "discrete": "discrete_vals",
    "user_eng_embedding": "user_eng_emb", "author_embedding": "author_emb", "user_embedding": "user_emb",
    "meta__author_id": "meta.author_id", "meta__user_id": "meta.user_id", "meta__tweet_id": "meta.tweet_id",
}
MFLOP_PER_EXAMPLE = 618  # forward + backward of the Heavy Ranker at 7112 inputs (notes/performance.md)


def make_config(data_dir: str, schema_path: str, batch: int) -> RecapDataConfig:
    return RecapDataConfig.model_validate({
        "global_batch_size": batch,
        "inputs": f"{data_dir}/*.parquet",
        "seg_dense_schema": {"schema_path": schema_path, "renamed_features": RENAMES},
        "tasks": {task: {} for task in TASKS},
        "preprocess": {"truncate_and_slice": {"continuous_feature_truncation": 2117, "binary_feature_truncation": 59}},
    })


def loader_rate(config: RecapDataConfig) -> float:
    dataset = RecapDataset(config, world_size=1, rank=0)
    start = time.perf_counter()
    rows = sum(batch.batch_size for batch in dataset)
    return rows / (time.perf_counter() - start)


def read_table_rate(files: list[str], columns: list[str]) -> float:
    start = time.perf_counter()
    rows = sum(pq.read_table(path, columns=columns).num_rows for path in files)
    return rows / (time.perf_counter() - start)


def mm_gflops(size: int = 2048, repeats: int = 3) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=49152)
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--large_batch", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)  # once per process

    workdir = tempfile.mkdtemp(prefix="tml-recap-bench-")
    try:
        schema_path = os.path.join(workdir, "segdense.json")
        with open(schema_path, "w") as stream:
            json.dump({"schema": [{"feature_name": n, "dtype": d, "length": l} for n, d, l in FEATURES]}, stream)
        data_dir = os.path.join(workdir, "data")
        small, large = (make_config(data_dir, schema_path, b) for b in (args.batch, args.large_batch))
        start = time.perf_counter()
        files = generate_random_data(small, data_dir, args.rows, num_files=args.files, rows_per_row_group=2048)
        print(f"wrote {args.rows} rows in {args.files} files ({sum(map(os.path.getsize, files)) / 1e9:.2f} GB) "
              f"in {time.perf_counter() - start:.1f} s")
        columns = plan_features(small).column_names

        rates: dict[str, list[float]] = {"read_table": [], "loader_batch": [], "loader_large": []}
        read_table_rate(files, columns)  # warm the page cache for both sides
        for repeat in range(args.repeats):
            rates["read_table"].append(read_table_rate(files, columns))
            rates["loader_batch"].append(loader_rate(small))
            rates["loader_large"].append(loader_rate(large))
            print(f"repeat {repeat}: " + ", ".join(f"{k} {v[-1]:.0f} rows/s" for k, v in rates.items()))
        gflops = mm_gflops()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    median = {name: statistics.median(values) for name, values in rates.items()}
    minimum = {name: min(values) for name, values in rates.items()}
    # Ratios within a repeat (runs seconds apart), then their median: robust to the box's drift.
    ratio = {
        name: statistics.median(loader / table for loader, table in zip(rates[name], rates["read_table"]))
        for name in ("loader_large", "loader_batch")
    }
    train_ceiling = gflops * 1e3 / MFLOP_PER_EXAMPLE
    print("min rows/s: " + ", ".join(f"{k} {v:.0f}" for k, v in minimum.items()))
    print(f"RESULT loader_vs_read_table_large_batch_ratio={ratio['loader_large']:.3f}")
    print(f"RESULT loader_vs_read_table_batch_{args.batch}_ratio={ratio['loader_batch']:.3f}")
    print(f"RESULT loader_batch_{args.batch}_vs_train_step_ceiling_ratio={median['loader_batch'] / train_ceiling:.1f}")
    print(f"RESULT loader_rows_per_s_large_batch={median['loader_large']:.0f}")
    print(f"RESULT loader_rows_per_s_batch_{args.batch}={median['loader_batch']:.0f}")
    print(f"RESULT read_table_rows_per_s={median['read_table']:.0f}")
    print(f"RESULT train_step_ceiling_examples_per_s={train_ceiling:.0f}")
    print(f"RESULT large_batch={args.large_batch}")


if __name__ == "__main__":
    main()
