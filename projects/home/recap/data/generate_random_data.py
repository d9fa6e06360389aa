"""Write random Heavy Ranker data for a config: N examples in M Parquet files, learnable binary labels.

    python -m tml.projects.home.recap.data.generate_random_data --config_path CONFIG.yaml \
        --n_examples 4096 --num_files 4 [--base_rate 0.1] [--task_base_rate TASK=RATE ...]

The original wrote one example with labels in 0..9 and ignored --n_examples (spec B7). Files go to
the folder of the section's `inputs` glob unless --output_dir is given. A folder holding earlier
generated files is refused unless --overwrite is given (then only those files are deleted, so no old
file stays behind for a glob to read); a folder holding anything else is refused.
"""
from __future__ import annotations

import argparse
import fnmatch
import posixpath
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

from tml.common.entry_point import call_command, command_parser, run_command

if TYPE_CHECKING:
    from tml.projects.home.recap.data.config import RecapDataConfig


def output_dir_for(config: RecapDataConfig) -> str:
    if config.inputs is None:
        raise ValueError("the data section has no inputs glob to take the folder from; pass --output_dir")
    return posixpath.dirname(config.inputs)


def generate_random_data(
    config: RecapDataConfig,
    output_dir: str,
    n_examples: int,
    num_files: int = 1,
    base_rate: float = 0.1,
    task_base_rates: Optional[Mapping[str, float]] = None,
    signal: float = 2.0,
    seed: int = 0,
    rows_per_row_group: int = 1024,
    overwrite: bool = False,
) -> list[str]:
    """Writes the files and returns their paths (`overwrite`: see the module docstring)."""
    import numpy as np

    from tml.common.filesystem.generated_files import claim_output_dir
    from tml.ml_logging.torch_logging import logging
    from tml.projects.home.recap.data.parquet_writer import SegDenseParquetWriter
    from tml.projects.home.recap.data.random_features import make_label_model, random_columns
    from tml.projects.home.recap.data.segdense import plan_features

    if n_examples < 1 or num_files < 1 or rows_per_row_group < 1:
        raise ValueError("n_examples, num_files and rows_per_row_group must be positive")
    if num_files > n_examples:
        raise ValueError(f"{num_files} files cannot each hold an example of {n_examples}")
    rates = {task: base_rate for task in config.tasks}
    for task, rate in (task_base_rates or {}).items():
        if task not in rates:
            raise ValueError(f"--task_base_rate names '{task}', which is not a task; tasks: {list(rates)}")
        rates[task] = rate
    bad = {task: rate for task, rate in rates.items() if not 0.0 < rate < 1.0}
    if bad:
        raise ValueError(f"base rates must be in (0, 1); got {bad}")

    plan = plan_features(config)
    rng = np.random.default_rng(seed)
    label_model = make_label_model(config, plan, signal, rng)
    names = [f"part-{file_index:05d}.parquet" for file_index in range(num_files)]
    claim_output_dir(output_dir, names, "generate_random_data", overwrite)
    features = [column.feature for column in plan.columns]
    biases: dict[str, float] = {}
    paths = []
    for file_index, file_rows in enumerate(np.array_split(np.arange(n_examples), num_files)):
        path = posixpath.join(output_dir, names[file_index])
        with SegDenseParquetWriter(path, features) as writer:
            for start in range(0, len(file_rows), rows_per_row_group):
                rows = min(rows_per_row_group, len(file_rows) - start)
                by_name = random_columns(plan, rows, label_model, rates, rng, biases)
                writer.write({column.feature.name: by_name[column.name] for column in plan.columns})
        paths.append(path)
    if config.inputs is not None and not fnmatch.fnmatch(paths[0], config.inputs):
        logging.warning(f"the written files ({paths[0]}, ...) do not match inputs '{config.inputs}'; "
                        f"set inputs to '{posixpath.join(output_dir, '*.parquet')}' to read them")
    logging.info(f"wrote {n_examples} examples in {num_files} files to {output_dir}")
    return paths


def _task_rate(text: str) -> tuple[str, float]:
    task, separator, rate = text.rpartition("=")
    if not separator:
        raise argparse.ArgumentTypeError(f"expected TASK=RATE, got '{text}'")
    return task, float(rate)


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__)
    parser.add_argument(
        "--section",
        default="train_data",
        help="Data section to use: train_data (default) or validation_data.<name>.",
    )
    parser.add_argument("--output_dir", help="Folder for the files; default: the folder of the section's inputs.")
    parser.add_argument("--overwrite", action="store_true",
                        help="Replace the files of an earlier run in the output folder (and nothing else).")
    parser.add_argument("--n_examples", type=int, default=4096, help="Examples in all files together.")
    parser.add_argument("--num_files", type=int, default=4)
    parser.add_argument("--base_rate", type=float, default=0.1, help="Positive rate of every task.")
    parser.add_argument("--task_base_rate", type=_task_rate, action="append", default=[], metavar="TASK=RATE")
    parser.add_argument("--signal", type=float, default=2.0, help="How strongly labels depend on features.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows_per_row_group", type=int, default=1024)
    return parser


def run(args: argparse.Namespace) -> int:
    from tml.projects.home.recap.data.config_files import load_section

    config = load_section(args)
    generate_random_data(
        config,
        args.output_dir or output_dir_for(config),
        args.n_examples,
        num_files=args.num_files,
        base_rate=args.base_rate,
        task_base_rates=dict(args.task_base_rate),
        signal=args.signal,
        seed=args.seed,
        rows_per_row_group=args.rows_per_row_group,
        overwrite=args.overwrite,
    )
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
