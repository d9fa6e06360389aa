"""Score and rank candidates with a trained Heavy Ranker.

    python -m tml.projects.home.recap.score --config_path FILE --checkpoint DIR_OR_SAVE_DIR \
        --input GLOB --output FILE.parquet [--weights task=w,...] [--set key=value ...]

What is read and the output columns (one row per candidate, in input order) are described in
`scoring.py`, the library behind this command.

This module is the command line; the library (`score_candidates`, `rank_candidates`, `write_table`,
...) lives in `scoring.py` and is served from here too, imported on first use so that `--help`
answers without importing torch.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from tml.common.entry_point import call_command, command_parser, library_attributes, run_command
from tml.projects.home.recap.engagement_weights import parse_weights

__getattr__ = library_attributes("tml.projects.home.recap.scoring")

# The defaults of tml.projects.home.recap.candidates (a module that imports torch).
DEFAULT_USER_ID_COLUMN = "meta.user_id"
DEFAULT_TWEET_ID_COLUMN = "meta.tweet_id"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("Score and rank Parquet candidates with a trained Heavy Ranker.")
    parser.add_argument("--checkpoint", required=True, help="A checkpoint folder, or a save_dir (its newest checkpoint).")
    parser.add_argument("--input", required=True, help="Glob of candidate Parquet files (train_data's layout).")
    parser.add_argument("--output", required=True, help="Parquet file to write, one row per candidate.")
    parser.add_argument(
        "--weights",
        type=parse_weights,
        default=None,
        metavar="TASK=W,...",
        help="Engagement weights replacing or adding to the April 2023 defaults, e.g. "
        "recap.engagement.is_replied=20,recap.engagement.is_favorited=1",
    )
    parser.add_argument("--batch_rows", type=int, default=1024, help="Candidates per forward pass.")
    parser.add_argument("--user_id_column", default=DEFAULT_USER_ID_COLUMN, help="Column grouping candidates into requests.")
    parser.add_argument("--tweet_id_column", default=DEFAULT_TWEET_ID_COLUMN, help="Column identifying the candidate.")
    parser.add_argument(
        "--id_columns",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        default=None,
        metavar="COL,...",
        help="Integer id columns copied to the output instead of the user and tweet ids; ranks group "
        "candidates by the first (e.g. a request or user id).",
    )
    parser.add_argument(
        "--raw_probabilities",
        action="store_true",
        help="Use the heads' uncalibrated probabilities (default: calibrated, undoing down-sampling).",
    )
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from tml.ml_logging.torch_logging import logging
    from tml.projects.home.recap.job import load_config
    from tml.projects.home.recap.scoring import score_candidates, write_table

    config = load_config(args.config_path, args.overrides)
    table = score_candidates(
        config,
        args.checkpoint,
        args.input,
        args.weights,
        batch_rows=args.batch_rows,
        user_id_column=args.user_id_column,
        tweet_id_column=args.tweet_id_column,
        probabilities="probabilities" if args.raw_probabilities else "calibrated_probabilities",
        id_columns=args.id_columns,
    )
    write_table(table, args.output)
    group_column = args.id_columns[0] if args.id_columns else args.user_id_column
    groups = len(np.unique(table.column(group_column).to_numpy())) if table.num_rows else 0
    logging.info(f"scored {table.num_rows} candidates of {groups} {group_column} values; wrote {args.output}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
