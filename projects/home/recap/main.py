"""Train the Heavy Ranker and evaluate it on every validation set.

    python -m tml.projects.home.recap.main --config_path FILE [--save_dir DIR] [--set key=value ...]
        [--mode train|evaluate|train_and_evaluate]
    torchrun --standalone --nproc_per_node N -m tml.projects.home.recap.main --config_path FILE ...

Checkpoints and TensorBoard logs go to `training.save_dir` (or --save_dir); running the same
command again resumes from the newest checkpoint there, and on a finished run evaluates it again.
`${TML_BASE}` in config files defaults to this checkout and `${TML_OUTPUT}` to ~/tmp/tml, so the
repository's configs work from any working directory. The job itself is in `job.py`.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from tml.common.entry_point import add_mode_flag, call_command, command_parser, load_command_config, run_command, training_session


def build_parser() -> argparse.ArgumentParser:
    parser = add_mode_flag(command_parser(__doc__, writes_run=True))
    parser.add_argument(
        "--debug_loop",
        action="store_true",
        help="Train with the plain debug loop (no pipeline, no checkpoints), then evaluate once.",
    )
    return parser


def run_job(args: argparse.Namespace) -> int:
    from tml.projects.home.recap import job

    config = load_command_config(job.RecapConfig, args)
    job.check_tasks(config, args.config_path)
    if args.mode == "evaluate" and args.overwrite_save_dir:
        from tml.core.config import ConfigError

        raise ConfigError("--overwrite_save_dir with --mode evaluate would delete the trainer's checkpoints; drop one")
    with training_session(config, args.overwrite_save_dir) as device:
        job.run(config, device, debug_loop=args.debug_loop, mode=args.mode)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command, in-process: returns its exit code."""
    return call_command(build_parser(), run_job, argv)


if __name__ == "__main__":
    run_command(build_parser(), run_job)
