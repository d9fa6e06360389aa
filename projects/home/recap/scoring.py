"""Score and rank candidates with a trained Heavy Ranker (the library behind the `score` command).

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

from typing import Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tml.common.filesystem import util as fs_util
from tml.projects.home.recap.candidates import TWEET_ID_COLUMN, USER_ID_COLUMN, CandidateReader
from tml.projects.home.recap.config import RecapConfig
from tml.projects.home.recap.engagement_weights import (
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
