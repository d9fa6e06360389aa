"""Sparse id features as one torchrec KeyedJaggedTensor, for large embedding tables."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.projects.home.recap.data.arrow_columns import JaggedColumn


def empty_keyed_jagged_tensor(batch_rows: int) -> KeyedJaggedTensor:
    return KeyedJaggedTensor(
        keys=[], values=torch.empty(0, dtype=torch.int64), lengths=torch.empty(0, dtype=torch.int32), stride=batch_rows
    )


def _values_and_lengths(name: str, value: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(value, JaggedColumn):
        return value.values[value.offsets[0]: value.offsets[-1]], value.lengths
    array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim == 1:
        return array, np.ones(len(array), dtype=np.int64)
    if array.ndim == 2:
        return array.reshape(-1), np.full(array.shape[0], array.shape[1], dtype=np.int64)
    raise ValueError(f"sparse feature '{name}' has shape {array.shape}; expected [B], [B, n] or variable-length lists")


def keyed_jagged_tensor(features: Mapping[str, Any], batch_rows: int) -> KeyedJaggedTensor:
    """Ids per key: a [B] feature gives one id per row, [B, n] n ids, a jagged column its own lengths."""
    if not features:
        return empty_keyed_jagged_tensor(batch_rows)
    values, lengths = [], []
    for name, value in features.items():
        key_values, key_lengths = _values_and_lengths(name, value)
        if len(key_lengths) != batch_rows:
            raise ValueError(f"sparse feature '{name}' has {len(key_lengths)} rows; expected {batch_rows}")
        values.append(key_values.astype(np.int64, copy=False))
        lengths.append(key_lengths.astype(np.int32, copy=False))
    return KeyedJaggedTensor(
        keys=list(features),
        values=torch.from_numpy(np.concatenate(values)),
        lengths=torch.from_numpy(np.concatenate(lengths)),
        stride=batch_rows,
    )
