"""Each user's TwHIN candidates at a moment of MovieLens-100k, as retrieval would have served them.

    python -m tml.projects.home.recap.scripts.movielens_candidates --embeddings EARLY_TWHIN_EXPORT \
        --twhin_data EARLY_TWHIN_GRAPH --twhin_config projects/twhin/config/movielens_retrieval.yaml \
        --cut_fraction 0.4 --output candidates.parquet [--k 100] [--relation liked]

For every user with a rating among the earliest `--cut_fraction` of all ratings (and a TwHIN vector),
the `--k` movies that the `--relation`'s query of the TwHIN model ranks highest, leaving out the
movies the user rated by then (as `movielens_retrieve_rank` retrieves). Written as Parquet
(meta.user_id, meta.movie_id, retrieval_rank, retrieval_score). The TwHIN model must know only
those earliest ratings (TwHIN's `prepare_movielens --split time --validation_fraction 1-F`): the
file then feeds `prepare_movielens --label_start_fraction F --served_candidates FILE` for the ratings
after the cut, whose retrieved-but-unrated movies are the negatives the ranker meets at serving time.
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

from tml.common.entry_point import CommandError, call_command, command_parser, run_command
from tml.common.output_dirs import default_output_dir


def write_candidates(embeddings: str, twhin_data: str, twhin_config: object, cut_fraction: float, output: str,
                     k: int = 100, relation: str = "liked") -> dict[str, int]:
    """Write the candidate file; returns its counts (users, rows)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tml.projects.home.recap.data import movielens as ml
    from tml.projects.home.recap.scripts.movielens_retrieve_rank import MOVIE_COLUMN, USER_COLUMN, retrieve_movies

    if k <= 0:
        raise CommandError(f"--k must be positive, got {k}")
    try:
        users, movies = ml.earliest_ratings(ml.movielens_folder(), cut_fraction)
    except ValueError as error:
        raise CommandError(f"--cut_fraction: {error}") from error
    lists, _ = retrieve_movies(twhin_data, embeddings, twhin_config, relation, np.unique(users), users, movies, k)  # type: ignore[arg-type]
    user_ids, movie_ids, ranks, scores = [], [], [], []
    for user, (found, values) in sorted(lists.items()):
        user_ids += [user] * len(found)
        movie_ids += found
        ranks += list(range(1, len(found) + 1))
        scores += values
    table = pa.table({USER_COLUMN: pa.array(user_ids, pa.int64()), MOVIE_COLUMN: pa.array(movie_ids, pa.int64()),
                      "retrieval_rank": pa.array(ranks, pa.int64()), "retrieval_score": pa.array(scores, pa.float32())})
    pq.write_table(table, output)
    return {"users": len(lists), "rows": table.num_rows}


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(__doc__.split("\n\n")[0], config="none")
    parser.add_argument("--embeddings", required=True, help="TwHIN export directory (user and movie tables, relations).")
    parser.add_argument("--twhin_data", default=default_output_dir("twhin", "movielens"),
                        help="TwHIN prepare_movielens output of that model (its mapping/).")
    parser.add_argument("--twhin_config", required=True, help="The TwHIN config the export was trained with.")
    parser.add_argument("--cut_fraction", type=float, required=True, help="The moment: after this share of all ratings.")
    parser.add_argument("--output", required=True, help="Candidate file, Parquet.")
    parser.add_argument("--k", type=int, default=100, help="Candidates per user.")
    parser.add_argument("--relation", default="liked", help="user -> movie relation whose query retrieves.")
    return parser


def main(args: argparse.Namespace) -> int:
    from tml.core.config import load_config_from_yaml
    from tml.projects.twhin.config import TwhinConfig

    twhin_config = load_config_from_yaml(TwhinConfig, args.twhin_config)
    try:
        counts = write_candidates(args.embeddings, args.twhin_data, twhin_config, args.cut_fraction, args.output,
                                  args.k, args.relation)
    except (KeyError, ValueError) as error:
        raise CommandError(error.args[0] if error.args else str(error)) from error
    print(f"{counts['users']} users, {counts['rows']} candidates; wrote {args.output}")
    return 0


def run(argv: Optional[Sequence[str]] = None) -> int:
    """In-process call (tests): the exit code."""
    return call_command(build_parser(), main, argv)


if __name__ == "__main__":
    run_command(build_parser(), main)
