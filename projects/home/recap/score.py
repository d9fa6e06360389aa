"""Score and rank candidates with a trained Heavy Ranker.

    python -m tml.projects.home.recap.score --config_path FILE --checkpoint DIR_OR_SAVE_DIR \
        --input GLOB --output FILE.parquet [--weights task=w,...] [--set key=value ...]

The checkpoint (of any world size; a save_dir means its newest checkpoint) is loaded into a plain
module in this process. Candidates are Parquet rows in train_data's layout; labels are not needed.
One output row per candidate, in input order:

    <id columns>                         the candidate's ids (meta.user_id, meta.tweet_id by default;
                                         any integer columns with --id_columns, the first one a request)
    <task> ...                           each head's calibrated probability (model task order)
    score                                sum over tasks of weight * probability (engagement_weights.py)
    rank                                 1 = best score among the rows of the same user id (a request)
"""
from __future__ import annotations

import argparse
from typing import Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tml.common.entry_point import call_command, command_parser, run_command
from tml.common.filesystem import util as fs_util
from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.candidates import TWEET_ID_COLUMN, USER_ID_COLUMN, CandidateReader
from tml.projects.home.recap.config import RecapConfig
from tml.projects.home.recap.engagement_weights import (
    parse_weights,
    rank_within_groups,
    resolve_weights,
    weighted_score,
)
from tml.projects.home.recap.model.model_and_loss import MODEL_INPUTS
from tml.projects.home.recap.trained_model import load_trained_model, recap_input_spec

SCORE_COLUMN = "score"
RANK_COLUMN = "rank"
PROBABILITY_OUTPUTS = ("calibrated_probabilities", "probabilities")


@torch.no_grad()
def rank_candidates(
    model: torch.nn.Module,
    reader: CandidateReader,
    weights: Optional[Mapping[str, float]] = None,
    probabilities: str = "calibrated_probabilities",
) -> pa.Table:
    """Score every candidate of `reader` with `model` (a MultiTaskRankingModel) and rank per user.

    `weights` overrides or extends the April 2023 defaults per task; ranks group rows by the
    reader's first id column.
    """
    if probabilities not in PROBABILITY_OUTPUTS:
        raise ValueError(f"probabilities must be one of {PROBABILITY_OUTPUTS}, got '{probabilities}'")
    task_names = list(model.task_names)
    task_weights = resolve_weights(task_names, weights)
    clashes = [name for name in task_names if name in (*reader.id_columns, SCORE_COLUMN, RANK_COLUMN)]
    if clashes:
        raise ValueError(f"task name(s) {clashes} clash with output columns {[*reader.id_columns, SCORE_COLUMN, RANK_COLUMN]}")
    was_training = model.training
    model.eval()
    id_parts: dict[str, list[np.ndarray]] = {name: [] for name in reader.id_columns}
    probability_parts: list[np.ndarray] = []
    try:
        for ids, batch in reader:
            outputs = model(**{name: getattr(batch, name) for name in MODEL_INPUTS})
            probability_parts.append(outputs[probabilities].float().numpy())
            for name, values in ids.items():
                id_parts[name].append(values)
    finally:
        model.train(was_training)
    if probability_parts:
        table_probabilities = np.concatenate(probability_parts)
    else:
        table_probabilities = np.zeros((0, len(task_names)), dtype=np.float32)
    id_values = {name: np.concatenate(parts) if parts else np.zeros(0, np.int64) for name, parts in id_parts.items()}
    scores = weighted_score(table_probabilities, task_names, task_weights)
    ranks = rank_within_groups(id_values[reader.id_columns[0]], scores)
    columns: dict[str, pa.Array] = {name: pa.array(values) for name, values in id_values.items()}
    for position, task in enumerate(task_names):
        columns[task] = pa.array(table_probabilities[:, position])
    columns[SCORE_COLUMN] = pa.array(scores)
    columns[RANK_COLUMN] = pa.array(ranks)
    metadata = {
        "tml.engagement_weights": ",".join(f"{task}={weight!r}" for task, weight in task_weights.items()),
        "tml.probabilities": probabilities,
    }
    return pa.table(columns).replace_schema_metadata(metadata)


def score_candidates(
    config: RecapConfig,
    checkpoint: str,
    inputs: str | Sequence[str],
    weights: Optional[Mapping[str, float]] = None,
    *,
    batch_rows: int = 1024,
    user_id_column: str = USER_ID_COLUMN,
    tweet_id_column: str = TWEET_ID_COLUMN,
    probabilities: str = "calibrated_probabilities",
    id_columns: Optional[Sequence[str]] = None,
) -> pa.Table:
    """Load the model of `checkpoint` and score the candidates of `inputs` (a glob or a list of files)
    laid out as `config.train_data` describes; see the module docstring for the output columns.
    `id_columns` (any integer columns; ranks group by the first) replaces the user and tweet ids."""
    reader = CandidateReader(
        config.train_data,
        inputs,
        id_columns=tuple(id_columns) if id_columns else (user_id_column, tweet_id_column),
        sparse_feature_names=recap_input_spec(config).sparse_feature_names,
        batch_rows=batch_rows,
    )
    model = load_trained_model(config, checkpoint)
    return rank_candidates(model, reader, weights, probabilities)


def write_table(table: pa.Table, path: str) -> None:
    fs = fs_util.infer_fs(path)
    parent = path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs_util.open_file(path, "wb") as stream:
        pq.write_table(table, stream, write_page_checksum=True)


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
    parser.add_argument("--user_id_column", default=USER_ID_COLUMN, help="Column grouping candidates into requests.")
    parser.add_argument("--tweet_id_column", default=TWEET_ID_COLUMN, help="Column identifying the candidate.")
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
    from tml.projects.home.recap.job import load_config

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
