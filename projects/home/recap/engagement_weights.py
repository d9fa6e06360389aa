"""Engagement weights and the Heavy Ranker's serving score: `score = sum_i weight_i * p_i`.

The heads' probabilities are combined into one number per candidate by a weighted sum; the weights
are set by the serving side, not learned. `APRIL_2023_WEIGHTS` are the ones the original recap
README published (April 2023), as recorded in ../shared/spec/original.md section 7.8. The README
names heads by serving parameter (fav, good_click, ...); the task each name maps to below follows
the README's description of that head. They are defaults only: every entry can be overridden (or a
task added) with `--weights task=w,...` / `score_candidates(weights=...)`.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np

from tml.ml_logging.torch_logging import logging

APRIL_2023_WEIGHTS: dict[str, float] = {
    "recap.engagement.is_favorited": 0.5,  # fav
    "recap.engagement.is_retweeted": 1.0,  # retweet
    "recap.engagement.is_replied": 13.5,  # reply
    "recap.engagement.is_profile_clicked_and_profile_engaged": 12.0,  # good_profile_click
    "recap.engagement.is_video_playback_50": 0.005,  # video_playback50
    "recap.engagement.is_replied_reply_engaged_by_author": 75.0,  # reply_engaged_by_author
    "recap.engagement.is_good_clicked_convo_desc_favorited_or_replied": 11.0,  # good_click
    "recap.engagement.is_good_clicked_convo_desc_v2": 10.0,  # good_click_v2
    "recap.engagement.is_negative_feedback_v2": -74.0,  # negative_feedback_v2
    "recap.engagement.is_report_tweet_clicked": -369.0,  # report
}


def parse_weights(text: str) -> dict[str, float]:
    """`task=w,task=w` (task names may contain dots; the last '=' of an entry separates the weight)."""
    weights: dict[str, float] = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        task, separator, value = entry.rpartition("=")
        if not separator or not task:
            raise ValueError(f"--weights entry '{entry}' must look like task=weight, e.g. recap.engagement.is_replied=13.5")
        try:
            weights[task.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--weights entry '{entry}': weight '{value}' is not a number") from None
    if not weights:
        raise ValueError("--weights is empty; expected task=weight[,task=weight...]")
    return weights


def resolve_weights(task_names: Sequence[str], overrides: Optional[Mapping[str, float]] = None) -> dict[str, float]:
    """One weight per model task: the April 2023 defaults, replaced or extended by `overrides`.

    An override naming no model task is an error (a typo would silently score with the default).
    Tasks with no weight get 0 and a warning. A model none of whose tasks is a published head gets
    weight 1 for every task when no weights are given (its own tasks: the score sums them).
    """
    overrides = dict(overrides or {})
    unknown = [task for task in overrides if task not in task_names]
    if unknown:
        raise ValueError(f"weights name task(s) {unknown} that the model does not have; its tasks: {list(task_names)}")
    table = {**APRIL_2023_WEIGHTS, **overrides}
    unweighted = [task for task in task_names if task not in table]
    if len(unweighted) == len(task_names):
        # No overrides (they name model tasks) and none of the published heads: a model of one's own
        # tasks. The score is the sum of its probabilities (a one-task model's probability).
        logging.info(f"no published engagement weight applies to tasks {list(task_names)}; each weighs 1.0")
        return {task: 1.0 for task in task_names}
    if unweighted:
        logging.warning(f"tasks {unweighted} have no engagement weight; they count 0 in the score")
    return {task: float(table.get(task, 0.0)) for task in task_names}


def weighted_score(probabilities: np.ndarray, task_names: Sequence[str], weights: Mapping[str, float]) -> np.ndarray:
    """[N] scores from [N, T] probabilities whose columns follow `task_names`."""
    vector = np.array([weights[task] for task in task_names], dtype=np.float64)
    return probabilities.astype(np.float64) @ vector


def rank_within_groups(group_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """1-based rank of each row among the rows of its group, highest score first.

    Equal scores keep input order (the earlier row ranks better), so ranks are always a permutation
    of 1..n within each group.
    """
    count = len(scores)
    if len(group_ids) != count:
        raise ValueError(f"{len(group_ids)} group ids for {count} scores")
    rows = np.arange(count)
    order = np.lexsort((rows, -scores, group_ids))  # the last key sorts first
    sorted_groups = group_ids[order]
    starts = np.ones(count, dtype=bool)
    starts[1:] = sorted_groups[1:] != sorted_groups[:-1]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(count), 0))
    ranks = np.empty(count, dtype=np.int64)
    ranks[order] = np.arange(count) - group_start + 1
    return ranks
