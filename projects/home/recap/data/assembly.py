"""From the rows a batch plan picks to a RecapBatch, in the original's order of steps.

gather -> tensors -> mantissa masking -> sampling-rate weights -> preprocessors -> labels [B, T]
(train/eval); inference has no weights (zeros [B, 1]) and runs only the input-shaping
preprocessors, at the same point of the same order (`build_preprocess`).
Padding rows of a last partial evaluation batch (PaddedBatchPlan) get label 0 and weight 0 before
the preprocessors, so no metric counts them.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from tml.core.job_mode import JobMode
from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.data.arrow_columns import JaggedColumn
from tml.projects.home.recap.data.batch import RecapBatch, to_batch
from tml.projects.home.recap.data.chunk_source import DataStats
from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.data.preprocessors import (
    WEIGHTS,
    ExtractFeatures,
    PreprocessPipeline,
    TruncateAndSlice,
    build_preprocess,
    sampling_rate_weights,
)
from tml.projects.home.recap.data.segdense import FeaturePlan
from tml.projects.home.recap.data.shuffle import BatchPlan, PaddedBatchPlan, gather

Inputs = dict[str, Any]


def mask_mantissa_(tensor: torch.Tensor, bits: int) -> torch.Tensor:
    """Zero the `bits` lowest mantissa bits of a float32 tensor in place (emulates lower precision)."""
    if tensor.dtype != torch.float32:
        raise TypeError(f"mantissa masking needs float32, got {tensor.dtype}")
    keep = np.int32(np.uint32((1 << 32) - (1 << bits)).view(np.int32))
    tensor.view(torch.int32).bitwise_and_(int(keep))
    return tensor


def count_nonfinite(tensor: torch.Tensor) -> int:
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return 0
    if tensor.dtype not in (torch.float32, torch.float64, torch.float16):
        tensor = tensor.float()  # numpy has no bfloat16
    finite = np.isfinite(tensor.numpy())  # numpy: ~100x faster than torch's CPU reductions here
    return 0 if finite.all() else int(finite.size - np.count_nonzero(finite))


def to_tensors(columns: Inputs) -> Inputs:
    """numpy arrays become tensors sharing their memory; jagged and bytes columns stay as they are."""
    return {
        name: torch.from_numpy(value) if isinstance(value, np.ndarray) and value.dtype != object else value
        for name, value in columns.items()
    }


class BatchAssembler:
    def __init__(
        self,
        config: RecapDataConfig,
        plan: FeaturePlan,
        mode: JobMode,
        stats: DataStats,
        sparse_feature_names: Sequence[str] = (),
        vocab_mapper: Optional[Callable[[Inputs], Inputs]] = None,
    ) -> None:
        self._config = config
        self._plan = plan
        self._inference = JobMode(mode) == JobMode.INFERENCE
        self._stats = stats
        self._sparse_feature_names = list(sparse_feature_names)
        self._vocab_mapper = vocab_mapper
        self.preprocess: Optional[PreprocessPipeline] = None
        if config.preprocess is not None:
            self.preprocess = build_preprocess(config.preprocess, mode)
        extract = self.preprocess.stage(ExtractFeatures) if self.preprocess else None
        self._extracted_names = extract.names if extract else []
        truncate = self.preprocess.stage(TruncateAndSlice) if self.preprocess else None
        # Truncation only drops trailing columns, and the stages before it only reorder rows, so the
        # dropped columns need not be copied at all.
        self._gather_widths = {
            name: width for name, width in (truncate.truncations.items() if truncate else []) if width is not None
        }
        self._warned_nonfinite = False

    @property
    def gather_widths(self) -> dict[str, int]:
        """2-d columns of which a batch only needs the first `width` columns."""
        return dict(self._gather_widths)

    def __call__(self, batch_plan: BatchPlan) -> RecapBatch:
        padding_rows = batch_plan.padding_rows if isinstance(batch_plan, PaddedBatchPlan) else 0
        return self.assemble(gather(batch_plan, self._gather_widths), padding_rows=padding_rows)

    def assemble(self, columns: Inputs, count: bool = True, padding_rows: int = 0) -> RecapBatch:
        """`padding_rows`: the last rows only fill the batch up; they get label 0 and weight 0."""
        inputs = to_tensors(columns)
        for name, bits in self._config.seg_dense_schema.mask_mantissa_features.items():
            mask_mantissa_(inputs[name], bits)
        rows = len(next(iter(inputs.values()))) if inputs else 0
        if self._inference:
            inputs[WEIGHTS] = torch.zeros(rows, 1)
        else:
            padding = slice(rows - padding_rows, rows)
            for task in self._config.tasks if padding_rows else ():
                inputs[task] = inputs[task].clone()  # gathered arrays may be shared; never write into them
                inputs[task][padding] = 0
            weights = sampling_rate_weights(inputs, self._config.tasks)
            if padding_rows:
                weights = torch.ones(rows, len(self._config.tasks)) if weights is None else weights
                weights[padding] = 0.0
            if weights is not None:
                inputs[WEIGHTS] = weights
        if self.preprocess is not None:
            inputs = self.preprocess(inputs)
        if self._vocab_mapper is not None:
            inputs = self._vocab_mapper(inputs)
        batch = to_batch(
            inputs,
            task_names=() if self._inference else self._plan.task_names,
            sparse_feature_names=self._sparse_feature_names,
            extracted_feature_names=self._extracted_names,
        )
        if count:
            self._count(batch)
        return batch

    def _count(self, batch: RecapBatch) -> None:
        nonfinite = count_nonfinite(batch.continuous_features)
        if nonfinite and not self._warned_nonfinite:
            self._warned_nonfinite = True
            logging.warning(
                f"{nonfinite} NaN/inf values in a batch of continuous features; they are passed to the model "
                f"(counted in the dataset's stats.nonfinite_continuous_values)",
                rank=-1,
            )
        self._stats.add(batches=1, nonfinite_continuous_values=nonfinite)
