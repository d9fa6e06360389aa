"""Does a model trained on down-sampled data of one's own predict the true rate? End to end, per seed:

    python -m tml.projects.home.recap.scripts.own_table_calibration [--rows 500000] [--seeds 0,1,2]

1. generate a click table (numeric, binary and categorical features, user and item ids) whose
   click probability `p_true` is known per row, about 1% on average;
2. `from_table` with 10x negative down-sampling of the training split (the rate goes into the config);
3. train with the starter config (`training.seed` = the seed);
4. score the held-out split, which is not down-sampled, with the scorer;
5. compare the mean calibrated and raw probabilities with the mean `p_true` of the held-out rows.

Each step is the command a user runs (subprocesses); the folder is --work_dir/seed<k>.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tml.common.entry_point import call_command, command_parser, run_command
from tml.common.output_dirs import default_output_dir

TASK = "clicked"


def make_table(path: str, rows: int, seed: int) -> float:
    """The click table; returns the mean click probability of all rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    mobile = rng.integers(0, 2, rows)
    country = rng.integers(0, 20, rows)
    logit = -5.55 + 0.9 * x[:, 0] - 0.6 * x[:, 1] + 0.4 * mobile + 0.6 * (country % 5 == 0)
    p_true = 1.0 / (1.0 + np.exp(-logit))
    table = pa.table({
        "user_id": rng.integers(0, 5000, rows), "item_id": np.arange(rows),
        "price": np.exp(x[:, 0] + 3.0), "age_days": 100.0 * np.abs(x[:, 1]), "noise": x[:, 2],
        "is_mobile": mobile, "country": country,
        TASK: (rng.random(rows) < p_true).astype(np.int64), "p_true": p_true,
    })
    pq.write_table(table, path)
    return float(p_true.mean())


def _run(*args: str) -> None:
    subprocess.run([sys.executable, "-m", *args], check=True, stdout=subprocess.DEVNULL)


def one_seed(work_dir: str, rows: int, seed: int, neg_rate: float, epochs: float) -> dict[str, float]:
    folder = os.path.join(work_dir, f"seed{seed}")
    os.makedirs(folder, exist_ok=True)
    table_path = os.path.join(folder, "events.parquet")
    make_table(table_path, rows, seed)
    data_dir = os.path.join(folder, "data")
    _run("tml.projects.home.recap.data.from_table", "--input", table_path, "--output_dir", data_dir,
         "--labels", TASK, "--numeric", "price,age_days,noise", "--binary", "is_mobile", "--categorical", "country",
         "--id_columns", "user_id,item_id", "--neg_downsampling_rate", str(neg_rate), "--seed", str(seed),
         "--epochs", str(epochs), "--overwrite")
    config = os.path.join(data_dir, "config.yaml")
    save_dir = os.path.join(folder, "run")
    _run("tml.projects.home.recap.main", "--config_path", config, "--set", f"training.save_dir={save_dir}")
    scores = {}
    for kind, flags in (("calibrated", []), ("raw", ["--raw_probabilities"])):
        output = os.path.join(folder, f"scores_{kind}.parquet")
        _run("tml.projects.home.recap.score", "--config_path", config, "--checkpoint", save_dir,
             "--input", os.path.join(data_dir, "validation", "*.parquet"), "--output", output,
             "--id_columns", "user_id,item_id", *flags)
        scores[kind] = pq.read_table(output)
    truth = pq.read_table(table_path, columns=["item_id", "p_true", TASK])
    p_true = truth.column("p_true").to_numpy()
    held_out = scores["calibrated"].column("item_id").to_numpy()
    true_mean = float(p_true[held_out].mean())
    calibrated = float(scores["calibrated"].column(TASK).to_numpy().mean())
    raw = float(scores["raw"].column(TASK).to_numpy().mean())
    return {
        "held_out_rows": len(held_out),
        "true_mean": true_mean,
        "label_mean": float(truth.column(TASK).to_numpy()[held_out].mean()),
        "calibrated_mean": calibrated,
        "calibrated_error": calibrated / true_mean - 1.0,
        "raw_mean": raw,
        "raw_error": raw / true_mean - 1.0,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__.splitlines()[0], config="none")
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--neg_downsampling_rate", type=float, default=0.1)
    parser.add_argument("--epochs", type=float, default=10.0)
    parser.add_argument("--work_dir", default=default_output_dir("own_table_calibration"))
    return parser


def run(args: argparse.Namespace) -> int:
    print("seed  held-out rows  true mean  label mean  calibrated mean (error)  raw mean (error)")
    for seed in (int(s) for s in args.seeds.split(",")):
        r = one_seed(args.work_dir, args.rows, seed, args.neg_downsampling_rate, args.epochs)
        print(f"{seed:>4}  {r['held_out_rows']:>13}  {r['true_mean']:.5f}    {r['label_mean']:.5f}     "
              f"{r['calibrated_mean']:.5f} ({r['calibrated_error']:+.1%})        {r['raw_mean']:.5f} ({r['raw_error']:+.1%})",
              flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
