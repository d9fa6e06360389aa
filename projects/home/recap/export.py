"""Export a trained Heavy Ranker for serving with `torch.export`.

    python -m tml.projects.home.recap.export --config_path FILE --checkpoint DIR_OR_SAVE_DIR \
        --output model.pt2 [--set key=value ...]

This module is the command line; the library (`ExportedRanker`, `export_to_file`, the input and
output names, ...) lives in `serving.py`, whose docstring describes the exported program. Its names
are served from here too, imported on first use so that `--help` answers without importing torch.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from tml.common.entry_point import call_command, command_parser, library_attributes, run_command

__getattr__ = library_attributes("tml.projects.home.recap.serving")


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("Export a trained Heavy Ranker with torch.export.")
    parser.add_argument("--checkpoint", required=True, help="A checkpoint folder, or a save_dir (its newest checkpoint).")
    parser.add_argument("--output", required=True, help="File to write the exported program to (e.g. model.pt2).")
    parser.add_argument(
        "--example_input",
        default=None,
        help="Glob of Parquet rows to trace with (default: train_data.inputs). Any rows of the right layout do.",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from tml.common.entry_point import CommandError
    from tml.projects.home.recap.candidates import CandidateReader, first_batch
    from tml.projects.home.recap.job import load_config
    from tml.projects.home.recap.serving import export_to_file
    from tml.projects.home.recap.trained_model import load_trained_model, recap_input_spec

    config = load_config(args.config_path, args.overrides)
    inputs = args.example_input or config.train_data.inputs
    if inputs is None:
        raise CommandError("train_data has no inputs glob; pass --example_input")
    reader = CandidateReader(
        config.train_data, inputs, id_columns=(), sparse_feature_names=recap_input_spec(config).sparse_feature_names,
        batch_rows=64,
    )
    model = load_trained_model(config, args.checkpoint)
    example = first_batch(reader)
    if example is None:
        raise CommandError(f"no rows in {inputs} to trace the model with")
    export_to_file(model, example, args.output)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
