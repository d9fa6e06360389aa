"""Train the Heavy Ranker on MovieLens-100k twice, with the parallel MaskNet backbone of
config/movielens.yaml and with a same-size MLP backbone, and print per-task validation AUROC side by side.

    python -m tml.projects.home.recap.scripts.movielens_compare [--data_dir DIR] [--work_dir DIR] \
        [--mlp_layer_sizes 192,96,64] [--set key=value ...]

The data is prepared first when DIR has none (prepare_movielens.py). `--set` overrides apply to both
runs. Each run trains from scratch in WORK_DIR/<backbone>/ (replaced), in this process, on one
thread: for a model this small, more threads only add synchronisation, and on a busy machine
OpenMP's spinning threads slowed steps down 10-40x. Results also go to WORK_DIR/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from typing import TYPE_CHECKING, Optional, Sequence

import tml
from tml.common.entry_point import CommandError, call_command, command_parser, run_command
from tml.projects.home.recap.scripts.prepare_movielens import DEFAULT_OUTPUT_DIR

if TYPE_CHECKING:  # torch-backed: imported where used, so --help answers at once
    from tml.projects.home.recap.config import RecapConfig

REPO_ROOT = os.path.dirname(os.path.abspath(tml.__file__))
DEFAULT_CONFIG = os.path.join(REPO_ROOT, "projects/home/recap/config/movielens.yaml")
VALIDATION_SET = "validation"


def _layer_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes, got '{text}'") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"layer sizes must be positive integers, got '{text}'")
    return sizes


def variants(mlp_layer_sizes: Sequence[int]) -> dict[str, list[str]]:
    """Backbone name -> config overrides that select it."""
    mlp = json.dumps({"mlp_config": {"layer_sizes": list(mlp_layer_sizes), "final_layer_activation": True}})
    return {"mask_net": [], "mlp": [f"model.backbone={mlp}"]}


def load_variant(config_path: str, data_dir: str, save_dir: str, overrides: Sequence[str]) -> "RecapConfig":
    from tml.core.config import load_config_from_yaml
    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.home.recap.job import check_tasks

    paths = [
        f"train_data.inputs={data_dir}/train/*.parquet",
        f"validation_data.{VALIDATION_SET}.inputs={data_dir}/validation/*.parquet",
        f"training.save_dir={save_dir}",
    ]
    config = load_config_from_yaml(RecapConfig, config_path, [*paths, *overrides])
    check_tasks(config, config_path)
    return config


def backbone_parameters(config: "RecapConfig") -> int:
    from tml.projects.home.recap.trained_model import build_model

    model = build_model(config)
    return sum(parameter.numel() for parameter in model.backbone.parameters()) if model.backbone is not None else 0


def train_variant(config: "RecapConfig") -> tuple[dict[str, float], float]:
    """Train and evaluate one config from scratch in this process, on OMP_NUM_THREADS (default 1) threads."""
    import torch

    from tml.common.entry_point import training_session
    from tml.projects.home.recap.job import run

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    started = time.perf_counter()
    with training_session(config) as device:
        results = run(config, device)
    if VALIDATION_SET not in results:
        raise CommandError(f"the run reported no metrics for validation set '{VALIDATION_SET}'; got {list(results)}")
    return dict(results[VALIDATION_SET]), time.perf_counter() - started


def format_table(tasks: Sequence[str], rows: dict[str, dict[str, object]]) -> str:
    names = list(rows)
    width = max(len("backbone parameters"), *(len(task) for task in tasks))
    lines = [f"{'validation AUROC':<{width}}  " + "  ".join(f"{name:>12}" for name in names)]
    for task in tasks:
        lines.append(f"{task:<{width}}  " + "  ".join(f"{rows[name]['auroc'][task]:>12.4f}" for name in names))
    lines.append(f"{'backbone parameters':<{width}}  " + "  ".join(f"{rows[name]['backbone_parameters']:>12,}" for name in names))
    lines.append(f"{'train + eval seconds':<{width}}  " + "  ".join(f"{rows[name]['seconds']:>12.0f}" for name in names))
    return "\n".join(lines)


def compare(config_path: str, data_dir: str, work_dir: str, mlp_layer_sizes: Sequence[int],
            overrides: Sequence[str] = ()) -> dict[str, dict[str, object]]:
    if not os.path.isdir(os.path.join(data_dir, "train")):
        from tml.projects.home.recap.scripts.prepare_movielens import prepare_movielens

        print(f"preparing MovieLens-100k in {data_dir}")
        prepare_movielens(data_dir)
    rows: dict[str, dict[str, object]] = {}
    for name, variant_overrides in variants(mlp_layer_sizes).items():
        save_dir = os.path.join(work_dir, name)
        shutil.rmtree(save_dir, ignore_errors=True)  # a leftover checkpoint would resume instead of training
        config = load_variant(config_path, data_dir, save_dir, [*overrides, *variant_overrides])
        metrics, seconds = train_variant(config)
        rows[name] = {
            "auroc": {task: float(metrics[f"auroc/{task}"]) for task in config.model.tasks},
            "metrics": metrics,
            "backbone_parameters": backbone_parameters(config),
            "seconds": seconds,
        }
    os.makedirs(work_dir, exist_ok=True)
    with open(os.path.join(work_dir, "results.json"), "w") as stream:
        json.dump(rows, stream, indent=2)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("MovieLens-100k: parallel MaskNet vs same-size MLP backbone (--set applies to both runs).",
                            config="optional")
    parser.set_defaults(config_path=DEFAULT_CONFIG)
    parser.add_argument("--data_dir", default=DEFAULT_OUTPUT_DIR, help="Prepared data (made here when absent).")
    parser.add_argument("--work_dir", default=None, help="Checkpoints and results.json (default: DATA_DIR/compare).")
    parser.add_argument(
        "--mlp_layer_sizes",
        type=_layer_sizes,
        default=[192, 96, 64],
        help="The MLP backbone's layers; the default matches the MaskNet backbone's parameter count and width.",
    )
    return parser


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool
    work_dir = args.work_dir or os.path.join(args.data_dir, "compare")
    rows = compare(args.config_path, args.data_dir, work_dir, args.mlp_layer_sizes, args.overrides)
    tasks = list(next(iter(rows.values()))["auroc"])
    print(f"\nMovieLens-100k, per-task AUROC on the time-split validation data of {args.data_dir}:")
    print(format_table(tasks, rows))
    print(f"(details in {os.path.join(work_dir, 'results.json')})")
    return 0


def run_main(argv: Optional[Sequence[str]] = None) -> int:
    """In-process call (tests): the exit code."""
    return call_command(build_parser(), main, argv)


if __name__ == "__main__":
    run_command(build_parser(), main)
