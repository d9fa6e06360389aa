"""Random feature columns in the segdense layout, with labels that depend on the features.

Labels are Bernoulli(sigmoid(signal * z_t + b_t)) where z_t is a fixed random combination of a few
continuous and binary features that survive the config's truncation and masks (so a trained model
can see them), and b_t is solved so that the mean probability equals the task's base rate.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional

import numpy as np

from tml.projects.home.recap.data.arrow_columns import JaggedColumn
from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.data.preprocessors import TruncateAndSlice
from tml.projects.home.recap.data.segdense import FeaturePlan, ReadColumn

INFORMATIVE_PER_FEATURE = 8
BINARY_RATE = 0.3
MAX_ID = 1_000_000


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def solve_bias(scores: np.ndarray, rate: float) -> float:
    """b with mean(sigmoid(scores + b)) == rate (bisection; the mean is increasing in b)."""
    low, high = -30.0, 30.0
    for _ in range(60):
        middle = 0.5 * (low + high)
        if _sigmoid(scores + middle).mean() < rate:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def kept_columns(config: RecapDataConfig, name: str, width: int) -> np.ndarray:
    """Columns of `name` the model will see after truncate_and_slice."""
    preprocess = config.preprocess
    if preprocess is None or preprocess.truncate_and_slice is None:
        return np.arange(width)
    return TruncateAndSlice(preprocess.truncate_and_slice).kept_columns(name, width)


@dataclasses.dataclass
class LabelModel:
    """Where the labels' signal lives and how strongly; fixed per generator seed."""

    informative: dict[str, np.ndarray]  # feature name -> columns used
    task_weights: dict[str, dict[str, np.ndarray]]  # task -> feature -> weight per informative column
    signal: float


def make_label_model(
    config: RecapDataConfig, plan: FeaturePlan, signal: float, rng: np.random.Generator
) -> LabelModel:
    informative: dict[str, np.ndarray] = {}
    for name in ("continuous", "binary"):
        column = plan.by_name(name)
        if column is not None and column.feature.length > 1:
            informative[name] = kept_columns(config, name, column.feature.length)[:INFORMATIVE_PER_FEATURE]
    task_weights = {
        task: {name: rng.standard_normal(len(columns)) for name, columns in informative.items()}
        for task in plan.task_names
    }
    return LabelModel(informative, task_weights, signal)


def _feature_values(column: ReadColumn, rows: int, rng: np.random.Generator) -> object:
    feature = column.feature
    shape = (rows,) if feature.length == 1 else (rows, feature.length)
    if feature.length == -1:
        lengths = rng.integers(0, 6, rows)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return JaggedColumn(rng.integers(0, MAX_ID, int(offsets[-1])), offsets)
    if feature.dtype == "float_list":
        return rng.standard_normal(shape, dtype=np.float32)
    if feature.dtype == "bytes_list":
        return np.array([b"%x" % value for value in rng.integers(0, MAX_ID, rows * max(feature.length, 1))],
                        dtype=object).reshape(shape)
    if "binary" in column.name or "binary" in feature.name:
        return (rng.random(shape) < BINARY_RATE).astype(np.int64)
    if feature.length == 1:
        return rng.integers(0, MAX_ID, shape)
    return rng.integers(0, 100, shape)


def _scores(columns: Mapping[str, np.ndarray], model: LabelModel, task: str) -> np.ndarray:
    rows = len(next(iter(columns.values())))
    score = np.zeros(rows)
    for name, picked in model.informative.items():
        values = columns[name][:, picked].astype(np.float64)
        values = (values - values.mean(axis=0)) / (values.std(axis=0) + 1e-9)
        score += values @ model.task_weights[task][name]
    spread = score.std()
    return score / spread if spread > 0 else score


def random_columns(
    plan: FeaturePlan,
    rows: int,
    model: LabelModel,
    base_rates: Mapping[str, float],
    rng: np.random.Generator,
    bias_cache: Optional[dict[str, float]] = None,
) -> dict[str, object]:
    """`rows` rows of every planned column, keyed by pipeline name."""
    columns = {column.name: _feature_values(column, rows, rng) for column in plan.columns if not column.is_label}
    bias_cache = {} if bias_cache is None else bias_cache
    for task in plan.task_names:
        logits = model.signal * _scores(columns, model, task) if model.informative else np.zeros(rows)
        if task not in bias_cache:  # solved once, so every chunk shares one label model
            bias_cache[task] = solve_bias(logits, base_rates[task])
        columns[task] = (rng.random(rows) < _sigmoid(logits + bias_cache[task])).astype(np.int64)
    return columns
