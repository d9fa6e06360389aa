"""Train TwHIN embeddings and evaluate them on `validation_data`.

    python -m tml.projects.twhin.run --config_path FILE [--save_dir DIR] [--set key=value ...]
        [--mode train|evaluate|train_and_evaluate]
    torchrun --standalone --nproc_per_node N -m tml.projects.twhin.run --config_path FILE ...

`--config_yaml_path`, the original's flag, is the same as --config_path. Checkpoints and
TensorBoard logs go to `training.save_dir` (or --save_dir); running the same command again resumes
from the newest checkpoint there, and on a finished run evaluates it again. The job itself is in
`job.py`.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from tml.common.entry_point import add_mode_flag, call_command, command_parser, load_command_config, run_command, training_session


def build_parser() -> argparse.ArgumentParser:
    return add_mode_flag(command_parser(__doc__, writes_run=True))


def run_job(args: argparse.Namespace) -> int:
    from tml.projects.twhin import job

    config = load_command_config(job.TwhinConfig, args)
    if args.mode == "evaluate" and args.overwrite_save_dir:
        from tml.core.config import ConfigError

        raise ConfigError("--overwrite_save_dir with --mode evaluate would delete the trainer's checkpoints; drop one")
    with training_session(config, args.overwrite_save_dir) as device:
        job.run(config, device, mode=args.mode)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command, in-process: returns its exit code."""
    return call_command(build_parser(), run_job, argv)


if __name__ == "__main__":
    run_command(build_parser(), run_job)
