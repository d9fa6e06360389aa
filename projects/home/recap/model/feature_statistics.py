"""Per-feature mean and std of signed-log1p continuous features: the `z_score_log` analysis file.

The file is JSON so it can be read and diffed by hand::

    {"format": "tml.recap.feature_statistics", "version": 1, "transform": "signed_log1p",
     "num_examples": 12800, "num_features": 2117, "mean": [...], "std": [...]}

Feature i is column i of the `continuous_features` tensor the model receives (after any
truncation/slicing in the data pipeline), so the file must be computed from data prepared the same way.

Run `python -m tml.projects.home.recap.model.feature_statistics --help` for the command line.
"""

from __future__ import annotations

import argparse
import sys
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence, Union

import numpy as np

from tml.common.entry_point import CommandError, call_command, command_parser, run_command
from tml.common.filesystem import open_file
from tml.ml_logging.torch_logging import logging

FORMAT_NAME = "tml.recap.feature_statistics"
FORMAT_VERSION = 1
TRANSFORM = "signed_log1p"

if TYPE_CHECKING:  # torch is imported where a tensor can arrive, so the command starts at once
    import torch

ArrayLike = Union[np.ndarray, "torch.Tensor"]


@dataclass(frozen=True)
class FeatureStatistics:
    mean: np.ndarray  # [C] float64
    std: np.ndarray  # [C] float64, population std
    num_examples: int

    @property
    def num_features(self) -> int:
        return int(self.mean.shape[0])


def signed_log1p_numpy(values: np.ndarray) -> np.ndarray:
    """The model's transform: non-finite -> 0, then sign(x) * log1p(|x|)."""
    values = np.where(np.isfinite(values), values, 0.0)
    return np.sign(values) * np.log1p(np.abs(values))


def _as_matrix(batch: Any) -> np.ndarray:
    """A [N, C] float64 array from an array, a tensor or a batch with `continuous_features`."""
    if hasattr(batch, "continuous_features"):
        batch = batch.continuous_features
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported
    if torch is not None and isinstance(batch, torch.Tensor):
        batch = batch.detach().to(torch.float64).cpu().numpy()
    matrix = np.asarray(batch, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"feature statistics need [examples, features] arrays, got shape {matrix.shape}.")
    return matrix


class _RunningMoments:
    """Mean and sum of squared deviations, merged batch by batch (Chan et al.), in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: Optional[np.ndarray] = None
        self.squared_deviations: Optional[np.ndarray] = None

    def add(self, matrix: np.ndarray) -> None:
        batch_count = matrix.shape[0]
        if batch_count == 0:
            return
        batch_mean = matrix.mean(axis=0)
        batch_squared = ((matrix - batch_mean) ** 2).sum(axis=0)
        if self.mean is None:
            self.count, self.mean, self.squared_deviations = batch_count, batch_mean, batch_squared
            return
        if matrix.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"batches disagree on the number of features: {self.mean.shape[0]} then {matrix.shape[1]}."
            )
        total = self.count + batch_count
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (batch_count / total)
        self.squared_deviations = (
            self.squared_deviations + batch_squared + delta**2 * (self.count * batch_count / total)
        )
        self.count = total


def statistics_from_batches(batches: Iterable[Any], max_batches: Optional[int] = None) -> FeatureStatistics:
    moments = _RunningMoments()
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        moments.add(signed_log1p_numpy(_as_matrix(batch)))
    if moments.mean is None:
        raise ValueError("no examples to compute feature statistics from.")
    std = np.sqrt(moments.squared_deviations / moments.count)
    return FeatureStatistics(mean=moments.mean, std=std, num_examples=moments.count)


def write_feature_statistics(statistics: FeatureStatistics, output_path: str) -> str:
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "transform": TRANSFORM,
        "num_examples": statistics.num_examples,
        "num_features": statistics.num_features,
        "mean": [float(value) for value in statistics.mean],
        "std": [float(value) for value in statistics.std],
    }
    with open_file(output_path, "w") as stream:
        json.dump(document, stream)
    return output_path


def compute_feature_statistics(
    batches_or_arrays: Iterable[Any], output_path: str, max_batches: Optional[int] = None
) -> str:
    """Stream the batches (arrays, tensors or batches with `continuous_features`) and write the file."""
    statistics = statistics_from_batches(batches_or_arrays, max_batches=max_batches)
    logging.info(
        "Feature statistics of %d features over %d examples -> %s",
        statistics.num_features,
        statistics.num_examples,
        output_path,
    )
    return write_feature_statistics(statistics, output_path)


def _float_list(document: dict, key: str, path: str, length: int) -> np.ndarray:
    values = document.get(key)
    if not isinstance(values, list) or len(values) != length:
        raise ValueError(f"feature statistics file {path}: '{key}' must be a list of {length} numbers.")
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"feature statistics file {path}: '{key}' has non-finite values.")
    return array


def load_feature_statistics(path: str) -> FeatureStatistics:
    with open_file(path, "r") as stream:
        try:
            document = json.load(stream)
        except json.JSONDecodeError as error:
            raise ValueError(f"feature statistics file {path} is not JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a feature statistics file (expected format '{FORMAT_NAME}').")
    if document.get("version") != FORMAT_VERSION or document.get("transform") != TRANSFORM:
        raise ValueError(
            f"feature statistics file {path} has version {document.get('version')!r} / transform "
            f"{document.get('transform')!r}; expected version {FORMAT_VERSION}, transform '{TRANSFORM}'."
        )
    num_features = document.get("num_features")
    if not isinstance(num_features, int) or num_features <= 0:
        raise ValueError(f"feature statistics file {path}: 'num_features' must be a positive integer.")
    return FeatureStatistics(
        mean=_float_list(document, "mean", path, num_features),
        std=_float_list(document, "std", path, num_features),
        num_examples=int(document.get("num_examples", 0)),
    )


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "Compute the z_score_log analysis file from a recap config's data "
        "(read as in training, so truncation/slicing applies)."
    )
    parser.add_argument("--output_path", required=True, help="Where to write the JSON statistics.")
    parser.add_argument("--num_batches", type=int, default=100, help="Batches to read (at most).")
    parser.add_argument(
        "--validation_set", default=None, help="Read this validation_data entry instead of train_data."
    )
    return parser


def run(args: argparse.Namespace) -> int:
    # Imported here: the data pipeline and the full config are only needed by the command.
    from tml.common.entry_point import load_command_config
    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.home.recap.data.dataset import RecapDataset

    config = load_command_config(RecapConfig, args)
    if args.validation_set is None:
        data_config = config.train_data
    elif args.validation_set in config.validation_data:
        data_config = config.validation_data[args.validation_set]
    else:
        raise CommandError(
            f"--validation_set {args.validation_set!r} is not in validation_data "
            f"{sorted(config.validation_data)}."
        )
    dataset = RecapDataset(data_config, repeat=False, rank=0, world_size=1)
    compute_feature_statistics(iter(dataset), args.output_path, max_batches=args.num_batches)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return call_command(build_parser(), run, argv)


if __name__ == "__main__":
    run_command(build_parser(), run)
