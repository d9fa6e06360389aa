"""MovieLens-100k as Heavy Ranker data: three engagement tasks per rating, split by time.

    python -m tml.projects.home.recap.scripts.prepare_movielens [--output_dir DIR] [--validation_fraction 0.2]

The rows, features and split: `tml/projects/home/recap/data/movielens.py`, the library, whose names
(`prepare_movielens`, `build_rows`, `negative_rows`, ...) this module serves too, imported on first
use so that `--help` answers without importing numpy or pyarrow.
"""
from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

from tml.common.entry_point import CommandError, call_command, command_parser, library_attributes, run_command
from tml.common.output_dirs import default_output_dir

__getattr__ = library_attributes("tml.projects.home.recap.data.movielens")

DEFAULT_OUTPUT_DIR = default_output_dir("movielens")  # the folder config/movielens.yaml reads


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("Convert MovieLens-100k (from the recbole wheel) to Heavy Ranker Parquet.", config="none")
    parser.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR, help="Where train/ and validation/ are written.")
    parser.add_argument("--validation_fraction", type=float, default=0.2, help="Latest share of ratings held out.")
    parser.add_argument("--num_train_files", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="Seed of the training rows' order (and of negatives).")
    parser.add_argument("--negatives_per_rating", type=int, default=0,
                        help="Also write this many sampled unrated movies per rating, all labels 0 (see negative_rows).")
    parser.add_argument("--negative_sampling", choices=("uniform", "popularity", "mixed"), default="uniform",
                        help="How negatives are drawn (see negative_rows).")
    parser.add_argument("--label_start_fraction", type=float, default=0.0,
                        help="Train only on ratings after the earliest this share of all ratings (the label period).")
    parser.add_argument("--served_candidates", metavar="PARQUET",
                        help="Candidates retrieved at the label period's start (meta.user_id, meta.movie_id; "
                             "movielens_candidates --cut_fraction = --label_start_fraction): also train on them, "
                             "labelled by the label period's ratings (see served_candidate_rows).")
    return parser


def run(args: argparse.Namespace) -> int:
    from tml.projects.home.recap.data.movielens import prepare_movielens

    try:
        stats = prepare_movielens(args.output_dir, args.validation_fraction, args.num_train_files, args.seed,
                                  args.negatives_per_rating, args.negative_sampling, args.label_start_fraction,
                                  args.served_candidates)
    except ValueError as error:  # bad fractions, counts or candidate file: the message names it
        raise CommandError(str(error)) from error
    print(json.dumps(stats, indent=2))
    print(f"wrote {args.output_dir}/train/ and {args.output_dir}/validation/")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
