"""The five preprocessors, on a batch given as a dict of tensors keyed by feature and label name.

They run in the original's fixed order (downsample_negatives, truncate_and_slice, downcast,
rectify_labels, extract_features) at train and evaluation time. At inference the stages that shape
the model's inputs (truncate_and_slice, downcast) run in that same order, so a model sees the
inputs it was trained on; the label stages and extract_features (metrics' inputs) do not. Fixes over the
original: DownCast handles every DownCastType (it asserted on all but bfloat16 and bool) and
TruncateAndSlice logs how many features a mask keeps (it logged the sum of the indices).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from tml.common.filesystem import util as fs_util
from tml.core.job_mode import JobMode
from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.data import config as data_config
from tml.projects.home.recap.data.arrow_columns import JaggedColumn

Inputs = dict[str, Any]
Preprocessor = Callable[[Inputs], Inputs]
WEIGHTS = "weights"

TORCH_DTYPES: dict[data_config.DownCastType, torch.dtype] = {
    data_config.DownCastType.BFLOAT16: torch.bfloat16,
    data_config.DownCastType.BOOL: torch.bool,
    data_config.DownCastType.FLOAT32: torch.float32,
    data_config.DownCastType.FLOAT16: torch.float16,
    data_config.DownCastType.UINT8: torch.uint8,
}


def _require(inputs: Inputs, name: str, who: str) -> Any:
    if name not in inputs:
        raise KeyError(f"{who} needs feature '{name}', which the batch does not have; it has {sorted(inputs)}")
    return inputs[name]


def select_rows(value: Any, rows: torch.Tensor) -> Any:
    if isinstance(value, torch.Tensor):
        return value.index_select(0, rows)
    if isinstance(value, JaggedColumn):
        return value.take(rows.numpy())
    return value[rows.numpy()]


def sampling_rate_weights(inputs: Inputs, tasks: Mapping[str, data_config.TaskData]) -> Optional[torch.Tensor]:
    """[B, T] weights y/pos_rate + (1 - y)/neg_rate undoing the data's sampling; None when all rates are 1."""
    if all(task.pos_downsampling_rate == 1.0 and task.neg_downsampling_rate == 1.0 for task in tasks.values()):
        return None
    columns = []
    for name, task in tasks.items():
        label = _require(inputs, name, "sampling-rate weights").reshape(-1).to(torch.float32)
        columns.append(label / task.pos_downsampling_rate + (1.0 - label) / task.neg_downsampling_rate)
    return torch.stack(columns, dim=1)


class DownsampleNegatives:
    """Reads k*B rows, keeps all positives (any engagement in the list) then negatives up to B rows,
    and scales negative weights by (k*B - positives) / (B - positives) so sums stay unbiased."""

    def __init__(self, config: data_config.DownsampleNegatives) -> None:
        self.config = config
        self.batch_multiplier = config.batch_multiplier or 1
        self.positive_overflow_batches = 0

    def __call__(self, inputs: Inputs) -> Inputs:
        first = next(value for value in inputs.values() if isinstance(value, torch.Tensor))
        read_rows = first.shape[0]
        if read_rows % self.batch_multiplier:
            raise ValueError(f"DownsampleNegatives got {read_rows} rows, not a multiple of {self.batch_multiplier}")
        batch_rows = read_rows // self.batch_multiplier
        positive = torch.zeros(read_rows, dtype=torch.bool)
        for label in self.config.engagements_list:
            positive |= (_require(inputs, label, "downsample_negatives") == 1).reshape(read_rows, -1).any(dim=1)
        num_positive = int(positive.sum())
        if num_positive > batch_rows:
            self.positive_overflow_batches += 1
            logging.warning(
                f"downsample_negatives: {num_positive} positives in {read_rows} rows exceed the batch of "
                f"{batch_rows}; positives are dropped without reweighting (as in the original)"
            )
        negative_weight = (
            (read_rows - num_positive) / (batch_rows - num_positive) if batch_rows != num_positive else 0.0
        )
        row_weights = torch.where(positive, 1.0, negative_weight).to(torch.float32)
        outputs = dict(inputs)
        if WEIGHTS not in outputs:
            outputs[WEIGHTS] = torch.ones(read_rows, self.config.num_engagements)
        outputs[WEIGHTS] = outputs[WEIGHTS] * row_weights.unsqueeze(1)
        keep = torch.cat([torch.nonzero(positive).flatten(), torch.nonzero(~positive).flatten()])[:batch_rows]
        return {name: select_rows(value, keep) for name, value in outputs.items()}


def load_mask_indices(path: str) -> torch.Tensor:
    with fs_util.open_file(path, "rb") as stream:
        mask = np.load(stream)
    return torch.from_numpy(np.flatnonzero(mask).astype(np.int64))


class TruncateAndSlice:
    """`continuous[:, :N]`, `binary[:, :M]`, then keep the columns where each mask is nonzero."""

    def __init__(self, config: data_config.TruncateAndSlice) -> None:
        self.config = config
        self.masks: dict[str, Optional[torch.Tensor]] = {}
        self.truncations = {
            "continuous": config.continuous_feature_truncation,
            "binary": config.binary_feature_truncation,
        }
        for name, path in (("continuous", config.continuous_feature_mask_path), ("binary", config.binary_feature_mask_path)):
            self.masks[name] = load_mask_indices(path) if path else None
            if path:
                logging.info(f"{name} feature mask {path} keeps {len(self.masks[name])} features")

    def kept_columns(self, name: str, width: int) -> np.ndarray:
        """Original column positions that survive, in output order."""
        columns = np.arange(width)[: self.truncations[name]]
        mask = self.masks[name]
        if mask is not None:
            if len(mask) and int(mask.max()) >= len(columns):
                path = getattr(self.config, f"{name}_feature_mask_path")
                raise ValueError(
                    f"{name} mask {path} selects column {int(mask.max())} but the feature has only "
                    f"{len(columns)} columns after truncation"
                )
            columns = columns[mask.numpy()]
        return columns

    def __call__(self, inputs: Inputs) -> Inputs:
        outputs = dict(inputs)
        for name in ("continuous", "binary"):
            if self.truncations[name] is None and self.masks[name] is None:
                continue
            tensor = _require(inputs, name, "truncate_and_slice")
            if self.truncations[name] is not None:
                tensor = tensor[:, : self.truncations[name]]
            if self.masks[name] is not None:
                self.kept_columns(name, inputs[name].shape[1])  # validates the mask against the width
                tensor = tensor.index_select(1, self.masks[name])
            outputs[name] = tensor
        return outputs


class DownCast:
    """Casts listed features (e.g. to bfloat16 or bool) to cut memory and transfer; may lose precision."""

    def __init__(self, config: data_config.DownCast) -> None:
        self.features = {name: TORCH_DTYPES[data_config.DownCastType(dtype)] for name, dtype in (config.features or {}).items()}
        if torch.bfloat16 in self.features.values():
            logging.warning("downcast to bfloat16 keeps float32's range but not its precision; compare metrics")

    def __call__(self, inputs: Inputs) -> Inputs:
        outputs = dict(inputs)
        for name, dtype in self.features.items():
            outputs[name] = _require(inputs, name, "downcast").to(dtype)
        return outputs


class RectifyLabels:
    """Zeroes a positive label unless impression and engagement both came within the window of serving."""

    def __init__(self, config: data_config.RectifyLabels) -> None:
        self.config = config
        self.window_ms = int(config.label_rectification_window_in_hours * 60 * 60 * 1000)

    def __call__(self, inputs: Inputs) -> Inputs:
        outputs = dict(inputs)
        served = _require(inputs, self.config.served_timestamp_field, "rectify_labels")
        impressed = _require(inputs, self.config.impressed_timestamp_field, "rectify_labels")
        for label, engaged_field in self.config.label_to_engaged_timestamp_field.items():
            value = _require(inputs, label, "rectify_labels")
            engaged = _require(inputs, engaged_field, "rectify_labels")
            keep = (value > 0) & (impressed - served < self.window_ms) & (engaged - served < self.window_ms)
            outputs[label] = torch.where(keep, value, torch.zeros_like(value))
        return outputs


class ExtractFeatures:
    """`inputs[name] = inputs[source_tensor][:, index]` for each row of the table."""

    def __init__(self, config: data_config.ExtractFeatures) -> None:
        self.rows = list(config.extract_feature_table)

    @property
    def names(self) -> list[str]:
        return [row.name for row in self.rows]

    def __call__(self, inputs: Inputs) -> Inputs:
        outputs = dict(inputs)
        for row in self.rows:
            source = _require(inputs, row.source_tensor, "extract_features")
            if source.dim() != 2 or not -source.shape[1] <= row.index < source.shape[1]:
                raise IndexError(
                    f"extract_features '{row.name}': index {row.index} is outside '{row.source_tensor}' "
                    f"of shape {tuple(source.shape)}"
                )
            outputs[row.name] = source[:, row.index]
        return outputs


class PreprocessPipeline:
    def __init__(self, stages: list[Preprocessor]) -> None:
        self.stages = stages

    def stage(self, kind: type) -> Optional[Any]:
        return next((stage for stage in self.stages if isinstance(stage, kind)), None)

    def __call__(self, inputs: Inputs) -> Inputs:
        for stage in self.stages:
            inputs = stage(inputs)
        return inputs


def build_preprocess(config: data_config.Preprocess, mode: JobMode = JobMode.TRAIN) -> Optional[PreprocessPipeline]:
    """The configured stages in the fixed order; at inference only the input-shaping ones (None
    when there are none)."""
    inference = JobMode(mode) == JobMode.INFERENCE
    stages: list[Preprocessor] = []
    if config.downsample_negatives and not inference:
        stages.append(DownsampleNegatives(config.downsample_negatives))
    if config.truncate_and_slice:
        stages.append(TruncateAndSlice(config.truncate_and_slice))
    if config.downcast:
        stages.append(DownCast(config.downcast))
    if config.rectify_labels and not inference:
        stages.append(RectifyLabels(config.rectify_labels))
    if config.extract_features and not inference:
        stages.append(ExtractFeatures(config.extract_features))
    if inference:
        return PreprocessPipeline(stages) if stages else None
    if not stages:
        raise ValueError("preprocess is set but configures no preprocessor; remove it or set one of its fields")
    return PreprocessPipeline(stages)
