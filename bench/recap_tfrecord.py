"""Rows/s of RecapDataset reading gzip TFRecords of tf.Example against the same rows in Parquet.

The original's data layout at full size (6000 continuous, 512 binary, 320 discrete, three 200-d
embeddings, 13 labels, 3 ids; bench/recap_data.py's schema) with the original config's
preprocessing (truncation to 2117 / 59), batch 512, shuffle buffer 1024, the dataset's default
read-ahead thread. The same random rows are written once as Parquet (row groups of 2048) and once as
gzip TFRecord files (one per Parquet file), outside the timed region. Timed: one full pass of
RecapDataset over each, from opening the files to the last ready RecapBatch (both sides: file
read, decompression, decoding, preprocessing, shuffling, batch assembly). The passes alternate, a
warm-up pass of each comes first (page cache), and the ratio is the median of per-repeat ratios.

    .venv/bin/python bench/recap_tfrecord.py [--rows 8192] [--files 4] [--repeats 5]

The machine is shared while helpers work: treat single figures as noisy; the ratio is what counts.
"""
from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import tempfile
import time

import numpy as np

# Imported before pyarrow: the recap package sets Arrow's allocator policy as pyarrow loads.
from tml.core.precision import cpu_model_and_flags
from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.data.dataset import RecapDataset
from tml.projects.home.recap.data.generate_random_data import generate_random_data

import pyarrow.parquet as pq  # noqa: E402,I001

from recap_data import FEATURES, RENAMES, TASKS  # noqa: E402  (the same schema as the Parquet bench)

KIND = {"float_list": "float", "int64_list": "int", "bytes_list": "byte"}


def cpu_description() -> str:
    model, flags = cpu_model_and_flags()
    simd = sorted(flag for flag in flags if flag.startswith(("avx", "sse4", "fma")))
    return f"{model}; {os.cpu_count()} cores; flags {' '.join(simd)}"


def make_config(pattern: str, schema_path: str) -> RecapDataConfig:
    return RecapDataConfig.model_validate({
        "global_batch_size": 512,
        "inputs": pattern,
        "seg_dense_schema": {"schema_path": schema_path, "renamed_features": RENAMES},
        "tasks": {task: {} for task in TASKS},
        "preprocess": {"truncate_and_slice": {"continuous_feature_truncation": 2117, "binary_feature_truncation": 59}},
    })


def write_tfrecord_copy(parquet_path: str, tfrecord_path: str) -> None:
    """The Parquet file's rows as a gzip TFRecord file of tf.Example (every schema feature)."""
    import tfrecord

    table = pq.read_table(parquet_path)
    columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name, _, _ in FEATURES}
    raw = tfrecord_path + ".raw"
    writer = tfrecord.TFRecordWriter(raw)
    for row in range(table.num_rows):
        writer.write({name: (np.atleast_1d(columns[name][row]).tolist(), KIND[dtype]) for name, dtype, _ in FEATURES})
    writer.close()
    with open(raw, "rb") as source, gzip.open(tfrecord_path, "wb") as target:
        shutil.copyfileobj(source, target)
    os.remove(raw)


def loader_rate(config: RecapDataConfig) -> float:
    dataset = RecapDataset(config, world_size=1, rank=0)
    start = time.perf_counter()
    rows = sum(batch.batch_size for batch in dataset)
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")

    workdir = tempfile.mkdtemp(prefix="tml-tfrecord-bench-")
    try:
        import json

        schema_path = os.path.join(workdir, "segdense.json")
        with open(schema_path, "w") as stream:
            json.dump({"schema": [{"feature_name": n, "dtype": d, "length": l} for n, d, l in FEATURES]}, stream)
        parquet_dir, tfrecord_dir = os.path.join(workdir, "parquet"), os.path.join(workdir, "tfrecord")
        os.makedirs(tfrecord_dir)
        parquet = make_config(f"{parquet_dir}/*.parquet", schema_path)
        tfrecords = make_config(f"{tfrecord_dir}/*.gz", schema_path)
        start = time.perf_counter()
        files = generate_random_data(parquet, parquet_dir, args.rows, num_files=args.files, rows_per_row_group=2048)
        for path in files:
            write_tfrecord_copy(path, os.path.join(tfrecord_dir, os.path.basename(path).replace(".parquet", ".gz")))
        sizes = {name: sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)) / 1e6
                 for name, folder in (("parquet", parquet_dir), ("tfrecord", tfrecord_dir))}
        print(f"wrote {args.rows} rows in {args.files} files: Parquet {sizes['parquet']:.0f} MB, "
              f"gzip TFRecord {sizes['tfrecord']:.0f} MB ({time.perf_counter() - start:.0f} s)")

        loader_rate(parquet), loader_rate(tfrecords)  # warm-up: page cache, imports
        rates: dict[str, list[float]] = {"parquet": [], "tfrecord": []}
        for repeat in range(args.repeats):
            rates["tfrecord"].append(loader_rate(tfrecords))
            rates["parquet"].append(loader_rate(parquet))
            print(f"repeat {repeat}: tfrecord {rates['tfrecord'][-1]:.0f} rows/s, parquet {rates['parquet'][-1]:.0f} rows/s")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    ratio = statistics.median(t / p for t, p in zip(rates["tfrecord"], rates["parquet"]))
    print(f"RESULT tfrecord_vs_parquet_loader_ratio={ratio:.4f}")
    print(f"RESULT tfrecord_loader_rows_per_s={statistics.median(rates['tfrecord']):.0f}")
    print(f"RESULT parquet_loader_rows_per_s={statistics.median(rates['parquet']):.0f}")


if __name__ == "__main__":
    main()
