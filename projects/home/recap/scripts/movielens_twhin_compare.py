"""Per-task validation AUROC of the MovieLens Heavy Ranker without and with TwHIN features, over seeds.

    python -m tml.projects.home.recap.scripts.movielens_twhin_compare \
        --data_dir $HOME/tmp/tml/movielens --twhin_data_dir $HOME/tmp/tml/movielens/twhin [--seeds 0 1 2]

`--data_dir` holds train/ and validation/ of prepare_movielens; `--twhin_data_dir` the same files
with the TwHIN columns joined in (twhin_features). Each seed (`training.seed`: initial weights,
dropout, data order) trains config/movielens.yaml on the first and config/movielens_twhin.yaml on
the second, from scratch, in this process on one thread; the two configs differ only in the TwHIN
inputs. Prints per-task AUROC (mean, min-max over seeds) and the gain, and saves them to
WORK_DIR/twhin_compare.json. The last line is `RESULT twhin_features_auroc_gain=` (mean over tasks
of the mean gain).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from typing import Optional, Sequence

import numpy as np

from tml.common.entry_point import call_command, command_parser, run_command
from tml.projects.home.recap.scripts.movielens_compare import REPO_ROOT, load_variant, train_variant

CONFIGS = {
    "without": os.path.join(REPO_ROOT, "projects/home/recap/config/movielens.yaml"),
    "with_twhin": os.path.join(REPO_ROOT, "projects/home/recap/config/movielens_twhin.yaml"),
}


def compare(data_dir: str, twhin_data_dir: str, work_dir: str, seeds: Sequence[int],
            overrides: Sequence[str] = ()) -> dict[str, object]:
    data = {"without": data_dir, "with_twhin": twhin_data_dir}
    auroc: dict[str, dict[str, list[float]]] = {name: {} for name in CONFIGS}
    for seed in seeds:
        for name, config_path in CONFIGS.items():
            save_dir = os.path.join(work_dir, f"{name}_seed{seed}")
            shutil.rmtree(save_dir, ignore_errors=True)  # a leftover checkpoint would resume instead of training
            config = load_variant(config_path, data[name], save_dir, [*overrides, f"training.seed={seed}"])
            metrics, _ = train_variant(config)
            for task in config.model.tasks:
                auroc[name].setdefault(task, []).append(float(metrics[f"auroc/{task}"]))
    tasks = list(auroc["without"])
    gains = {task: float(np.mean(auroc["with_twhin"][task]) - np.mean(auroc["without"][task])) for task in tasks}
    result = {"seeds": list(seeds), "auroc": auroc, "gain": gains, "mean_gain": float(np.mean(list(gains.values())))}
    os.makedirs(work_dir, exist_ok=True)
    with open(os.path.join(work_dir, "twhin_compare.json"), "w") as stream:
        json.dump(result, stream, indent=2)
    return result


def format_table(result: dict) -> str:
    lines = ["| task | without TwHIN | with TwHIN | gain (mean) |", "|---|---|---|---|"]
    for task, gain in result["gain"].items():
        cells = []
        for name in CONFIGS:
            values = result["auroc"][name][task]
            cells.append(f"{np.mean(values):.4f} ({min(values):.4f}-{max(values):.4f})")
        lines.append(f"| {task} | {cells[0]} | {cells[1]} | {gain:+.4f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__.split("\n\n")[0] + " --set applies to every run.", config="none")
    parser.add_argument("--data_dir", required=True, help="prepare_movielens output (train/, validation/).")
    parser.add_argument("--twhin_data_dir", required=True, help="The same files with TwHIN columns (twhin_features).")
    parser.add_argument("--work_dir", default=None, help="Checkpoints and twhin_compare.json (default: DATA_DIR/twhin_compare).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Config override applied to every run (repeatable).")
    return parser


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool
    work_dir = args.work_dir or os.path.join(args.data_dir, "twhin_compare")
    result = compare(args.data_dir, args.twhin_data_dir, work_dir, args.seeds, args.overrides)
    print(f"\nMovieLens-100k, per-task validation AUROC, mean (min-max) over seeds {args.seeds}:")
    print(format_table(result))
    print(f"RESULT twhin_features_auroc_gain={result['mean_gain']:.4f}")
    return 0


def run_main(argv: Optional[Sequence[str]] = None) -> int:
    """In-process call (tests): the exit code."""
    return call_command(build_parser(), main, argv)


if __name__ == "__main__":
    run_command(build_parser(), main)
