"""What the Heavy Ranker reads, derived from the config alone: input widths, sparse feature names
and label names. The dataset, the model builder, the scorer and the exporter all take it from here,
so no component has to run the data pipeline to learn the model's shapes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch

from tml.projects.home.recap.data.batch import DENSE_FEATURES, EMBEDDING_FIELDS
from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.data.preprocessors import TruncateAndSlice
from tml.projects.home.recap.data.segdense import VARIABLE_LENGTH, plan_features

LABELS = "labels"


@dataclasses.dataclass(frozen=True)
class RecapInputSpec:
    """`shapes`: batch field -> shape with -1 for the batch dimension (dense features, present
    embeddings and, with labels, "labels" [-1, T]); `sparse_feature_names`: the KJT keys the large
    tables read; `label_names`: the data's label columns, in batch order."""

    shapes: dict[str, torch.Size]
    sparse_feature_names: tuple[str, ...]
    label_names: tuple[str, ...]

    @property
    def feature_shapes(self) -> dict[str, torch.Size]:
        """The shapes the model is built from (everything but the labels)."""
        return {name: shape for name, shape in self.shapes.items() if name != LABELS}


def _kept_width(truncate: Optional[TruncateAndSlice], name: str, width: int) -> int:
    return width if truncate is None else len(truncate.kept_columns(name, width))


def input_spec(data_config: RecapDataConfig, model_config: Any = None, with_labels: bool = True) -> RecapInputSpec:
    """The spec of batches read with `data_config` (as in training: truncation and slicing change
    widths) for a model with `model_config` (its large tables name the sparse features)."""
    plan = plan_features(data_config, with_labels=False)
    preprocess = data_config.preprocess
    truncate = (
        TruncateAndSlice(preprocess.truncate_and_slice)
        if preprocess is not None and preprocess.truncate_and_slice is not None
        else None
    )
    shapes: dict[str, torch.Size] = {}
    fields = {**{name: field for field, name in DENSE_FEATURES.items()}, **{name: name for name in EMBEDDING_FIELDS}}
    for name, field in fields.items():
        column = plan.by_name(name)
        if column is None:
            continue  # a block or embedding the data does not map is an empty input
        length = column.feature.length
        if length == VARIABLE_LENGTH:
            raise ValueError(
                f"feature '{name}' ({column.feature.name} in {plan.schema_path}) has variable length; "
                f"the model's inputs need a fixed width"
            )
        if name in ("continuous", "binary"):
            length = _kept_width(truncate, name, length)
        if length == 0:
            continue  # an empty block is no model input
        is_block = field in DENSE_FEATURES  # a one-feature block is still [B, 1] (`to_batch`)
        shapes[field] = torch.Size([-1]) if length == 1 and not is_block else torch.Size([-1, length])
    label_names = tuple(data_config.tasks)
    if with_labels and label_names:
        shapes[LABELS] = torch.Size([-1, len(label_names)])
    large = getattr(model_config, "large_embeddings", None)
    sparse = tuple(large.feature_names) if large is not None else ()
    return RecapInputSpec(shapes=shapes, sparse_feature_names=sparse, label_names=label_names)
