"""Rows/s a trainer gets from ONE remote reader over Arrow Flight against the local RecapDataset.

Full-size rows (bench/recap_data.py's schema: 6000 continuous, 512 binary, 320 discrete, three
200-d embeddings, 13 labels) with the original config's truncation (2117 / 59), batch 512,
repeating. The reader is a separate process on 127.0.0.1 (started outside the timed region) that
runs exactly what `python -m tml.projects.home.recap.data.flight_reader` runs: RecapDataset (files,
decoding, preprocessing, shuffling, batching, its read-ahead thread) -> Arrow record batches ->
Flight. Timed on the trainer side: --batches ready RecapBatches after the first one, from a reader
started for this measurement (remote: Flight transfer + Arrow->tensor decode here, the whole
pipeline in the reader) or from a fresh local RecapDataset (the whole pipeline in the trainer). The
reader is stopped before the local measurement, so it neither competes for the cores nor stocks
batches ahead. Remote and local alternate; the ratio is the median of per-repeat ratios.

On this machine the reader and the trainer share the same cores, so the remote figure is a lower
bound of what a reader on another machine gives; the machine is also shared with other jobs (noisy).

    .venv/bin/python bench/recap_flight.py [--rows 8192] [--files 4] [--batches 40] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time

from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.data.dataset import RecapDataset
from tml.projects.home.recap.data.generate_random_data import generate_random_data
from tml.projects.home.recap.data.remote import RemoteRecapDataset

from recap_data import FEATURES, RENAMES, TASKS  # noqa: E402
from recap_tfrecord import cpu_description  # noqa: E402

BATCH = 512


def make_config(data_dir: str, schema_path: str) -> RecapDataConfig:
    return RecapDataConfig.model_validate({
        "global_batch_size": BATCH,
        "inputs": f"{data_dir}/*.parquet",
        "seg_dense_schema": {"schema_path": schema_path, "renamed_features": RENAMES},
        "tasks": {task: {} for task in TASKS},
        "preprocess": {"truncate_and_slice": {"continuous_feature_truncation": 2117, "binary_feature_truncation": 59}},
    })


def serve(config_json: str, port_queue: "multiprocessing.Queue[int]") -> None:
    """The reader process: what the flight_reader command does for train_data."""
    from tml.common.batch_arrow import batch_to_arrow
    from tml.common.flight import BatchServer

    config = RecapDataConfig.model_validate_json(config_json)
    dataset = RecapDataset(config, repeat=True, rank=0, world_size=1)
    server = BatchServer((batch_to_arrow(batch) for batch in dataset), host="127.0.0.1", port=0)
    port_queue.put(server.port)
    server.serve()


def rate(batches, count: int) -> float:
    iterator = iter(batches)
    next(iterator)  # connection / pipeline start-up, outside the timing
    start = time.perf_counter()
    rows = sum(next(iterator).batch_size for _ in range(count))
    return rows / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}")
    workdir = tempfile.mkdtemp(prefix="tml-flight-bench-")
    reader = None
    try:
        schema_path = os.path.join(workdir, "segdense.json")
        with open(schema_path, "w") as stream:
            json.dump({"schema": [{"feature_name": n, "dtype": d, "length": l} for n, d, l in FEATURES]}, stream)
        data_dir = os.path.join(workdir, "data")
        config = make_config(data_dir, schema_path)
        generate_random_data(config, data_dir, args.rows, num_files=args.files, rows_per_row_group=2048)
        context = multiprocessing.get_context("spawn")
        rates: dict[str, list[float]] = {"remote": [], "local": []}
        rate(RecapDataset(config, repeat=True, rank=0, world_size=1), 2)  # warm-up: page cache
        for repeat in range(args.repeats):
            ports = context.Queue()
            reader = context.Process(target=serve, args=(config.model_dump_json(), ports), daemon=True)
            reader.start()
            address = f"127.0.0.1:{ports.get(timeout=300)}"
            rates["remote"].append(rate(RemoteRecapDataset(config, [address], world_size=1), args.batches))
            reader.kill()
            reader.join()
            rates["local"].append(rate(RecapDataset(config, repeat=True, rank=0, world_size=1), args.batches))
            print(f"repeat {repeat}: remote {rates['remote'][-1]:.0f} rows/s, local {rates['local'][-1]:.0f} rows/s")
    finally:
        if reader is not None and reader.is_alive():
            reader.kill()
            reader.join()
        shutil.rmtree(workdir, ignore_errors=True)
    ratio = statistics.median(r / l for r, l in zip(rates["remote"], rates["local"]))
    print(f"RESULT one_reader_vs_local_loader_ratio={ratio:.3f}")
    print(f"RESULT one_reader_rows_per_s={statistics.median(rates['remote']):.0f}")
    print(f"RESULT local_loader_rows_per_s={statistics.median(rates['local']):.0f}")


if __name__ == "__main__":
    main()
