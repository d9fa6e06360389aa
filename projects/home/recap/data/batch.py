"""`RecapBatch`, the Heavy Ranker's training batch, and its assembly from preprocessed features.

Labels are a [B, T] tensor whose columns are named by `label_names` (the data config's task order),
so a model picks its tasks by name; the original's loss indexed columns by model task position
although the data had 13 labels in another order than the model's 10 towers (spec bug B1).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.common.batch import DataclassBatch
from tml.projects.home.recap.data.sparse import keyed_jagged_tensor

# Fields that describe tensors rather than hold them: kept by `to()`/`pin_memory()`, never moved.
_DESCRIPTION = {"tensor": False}
EMBEDDING_FIELDS = ("user_embedding", "user_eng_embedding", "author_embedding")
DENSE_FEATURES = {"continuous_features": "continuous", "binary_features": "binary", "discrete_features": "discrete"}
# An embedding input and a sparse id feature for the same entity would give the model two sources.
_EMBEDDING_ID_FEATURES = {
    "user_embedding": "meta__user_id",
    "user_eng_embedding": "meta__user_eng_id",
    "author_embedding": "meta__author_id",
}


@dataclasses.dataclass
class RecapBatch(DataclassBatch):
    continuous_features: torch.Tensor
    binary_features: torch.Tensor
    discrete_features: torch.Tensor
    sparse_features: KeyedJaggedTensor
    labels: Optional[torch.Tensor]  # [B, T] int64; None at inference
    user_embedding: Optional[torch.Tensor] = None
    user_eng_embedding: Optional[torch.Tensor] = None
    author_embedding: Optional[torch.Tensor] = None
    weights: Optional[torch.Tensor] = None  # [B, T] float32; ones unless sampling rates or downsampling
    extracted_features: Optional[torch.Tensor] = None  # [B, E] from preprocess.extract_features
    label_names: tuple[str, ...] = dataclasses.field(default=(), metadata=_DESCRIPTION)
    extracted_feature_names: tuple[str, ...] = dataclasses.field(default=(), metadata=_DESCRIPTION)

    def __post_init__(self) -> None:
        if self.weights is None and self.labels is not None:
            self.weights = torch.ones(self.labels.shape, dtype=torch.float32)
        for name in EMBEDDING_FIELDS:
            if getattr(self, name) is None:  # the original's placeholder for absent embeddings
                setattr(self, name, torch.empty([0, 0]))
        if self.labels is not None and self.label_names and len(self.label_names) != self.labels.shape[-1]:
            raise ValueError(
                f"labels has {self.labels.shape[-1]} columns but label_names names {len(self.label_names)}"
            )

    @classmethod
    def feature_names(cls) -> list[str]:
        return [field.name for field in dataclasses.fields(cls) if field.metadata.get("tensor", True)]

    def _column(self, names: Sequence[str], name: str, what: str) -> int:
        try:
            return list(names).index(name)
        except ValueError:
            raise KeyError(f"no {what} named '{name}'; the batch has {list(names)}") from None

    def label(self, task: str) -> torch.Tensor:
        """[B] labels of `task`."""
        if self.labels is None:
            raise KeyError(f"no labels in this batch (inference data); asked for '{task}'")
        return self.labels[:, self._column(self.label_names, task, "label")]

    def weight(self, task: str) -> torch.Tensor:
        """[B] weights of `task` (weights columns follow label_names)."""
        return self.weights[:, self._column(self.label_names, task, "label")]

    def extracted_feature(self, name: str) -> torch.Tensor:
        return self.extracted_features[:, self._column(self.extracted_feature_names, name, "extracted feature")]


def _stack_columns(tensors: Sequence[torch.Tensor], dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    if dtype is None:
        dtype = tensors[0].dtype
        for tensor in tensors[1:]:
            dtype = torch.promote_types(dtype, tensor.dtype)
    return torch.stack([tensor.reshape(-1).to(dtype) for tensor in tensors], dim=1)


_EMPTY_DTYPES = {"continuous": torch.float32, "binary": torch.int64, "discrete": torch.int64}


def _as_block(tensor: torch.Tensor) -> torch.Tensor:
    """A block of one feature is stored as a scalar column ([B]); the model reads [B, width]."""
    return tensor.unsqueeze(1) if isinstance(tensor, torch.Tensor) and tensor.dim() == 1 else tensor


def _batch_rows(inputs: Mapping[str, Any]) -> int:
    for name in (*DENSE_FEATURES.values(), *inputs):
        value = inputs.get(name)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
        if hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
            return len(value)
    raise KeyError(f"no feature to take the batch size from among {sorted(inputs)}")


def to_batch(
    inputs: Mapping[str, Any],
    task_names: Sequence[str] = (),
    sparse_feature_names: Sequence[str] = (),
    extracted_feature_names: Sequence[str] = (),
) -> RecapBatch:
    """A RecapBatch from features named as after renaming (continuous, binary, discrete, ...).

    A dense block the data does not map (no renamed feature `binary`, say) is an empty [B, 0] tensor:
    data without binary or discrete features needs no placeholder columns. A block of length 1 (a
    scalar column) becomes [B, 1]."""
    batch_rows = _batch_rows(inputs)
    dense = {
        field_name: _as_block(inputs[name]) if name in inputs else torch.zeros(batch_rows, 0, dtype=_EMPTY_DTYPES[name])
        for field_name, name in DENSE_FEATURES.items()
    }
    sparse = {}
    for name in sparse_feature_names:
        if name not in inputs:
            raise KeyError(f"sparse feature '{name}' is not among the features read: {sorted(inputs)}")
        sparse[name] = inputs[name]
    embeddings = {}
    for field_name in EMBEDDING_FIELDS:
        if field_name in inputs:
            if _EMBEDDING_ID_FEATURES[field_name] in sparse:
                raise ValueError(
                    f"both '{field_name}' and sparse ids '{_EMBEDDING_ID_FEATURES[field_name]}' are inputs; "
                    f"use one source per entity"
                )
            embeddings[field_name] = inputs[field_name]
    label_columns = [inputs[task] for task in task_names]
    # Soft labels (probabilities) stay floats; 0/1 labels are int64.
    soft = any(torch.as_tensor(column).is_floating_point() for column in label_columns)
    labels = _stack_columns(label_columns, torch.float32 if soft else torch.int64) if task_names else None
    extracted = _stack_columns([inputs[name] for name in extracted_feature_names]) if extracted_feature_names else None
    return RecapBatch(
        **dense,
        sparse_features=keyed_jagged_tensor(sparse, batch_rows),
        labels=labels,
        weights=inputs.get("weights"),
        extracted_features=extracted,
        label_names=tuple(task_names),
        extracted_feature_names=tuple(extracted_feature_names),
        **embeddings,
    )
