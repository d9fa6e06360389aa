"""The segdense JSON schema, and which of its features a data config reads under which names.

The segdense file stays the single source of truth for the on-disk format: one Parquet column per
schema feature, named as in the schema (see `parquet_schema.py`).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Optional

import numpy as np

from tml.common.filesystem import util as fs_util
from tml.projects.home.recap.data.config import RecapDataConfig

VARIABLE_LENGTH = -1
NUMPY_DTYPES = {"int64_list": np.dtype(np.int64), "float_list": np.dtype(np.float32), "bytes_list": np.dtype(object)}


@dataclasses.dataclass(frozen=True)
class SegDenseFeature:
    name: str
    dtype: str  # int64_list | float_list | bytes_list
    length: int  # -1: variable length

    @property
    def numpy_dtype(self) -> np.dtype:
        return NUMPY_DTYPES[self.dtype]

    @property
    def is_scalar(self) -> bool:
        return self.length == 1


def parse_segdense_schema(document: dict, source: str) -> dict[str, SegDenseFeature]:
    entries = document.get("schema") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"segdense schema {source} must be a JSON object with a 'schema' list")
    features: dict[str, SegDenseFeature] = {}
    for position, entry in enumerate(entries):
        try:
            feature = SegDenseFeature(str(entry["feature_name"]), str(entry["dtype"]), int(entry["length"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"segdense schema {source}: entry {position} needs feature_name, dtype and length; got {entry!r}"
            ) from error
        if feature.dtype not in NUMPY_DTYPES:
            raise ValueError(
                f"segdense schema {source}: feature '{feature.name}' has dtype '{feature.dtype}'; "
                f"expected one of {sorted(NUMPY_DTYPES)}"
            )
        if feature.length < 1 and feature.length != VARIABLE_LENGTH:
            raise ValueError(
                f"segdense schema {source}: feature '{feature.name}' has length {feature.length}; "
                f"expected a positive length or -1 (variable)"
            )
        features[feature.name] = feature
    return features


def load_segdense_schema(path: str) -> dict[str, SegDenseFeature]:
    """Schema features by name, in file order."""
    with fs_util.open_file(path, "r") as stream:
        try:
            document = json.load(stream)
        except json.JSONDecodeError as error:
            raise ValueError(f"segdense schema {path} is not valid JSON: {error}") from error
    return parse_segdense_schema(document, path)


@dataclasses.dataclass(frozen=True)
class ReadColumn:
    """One Parquet column read, and the name the pipeline knows it by."""

    feature: SegDenseFeature
    name: str  # after renaming
    is_label: bool


@dataclasses.dataclass(frozen=True)
class FeaturePlan:
    schema_path: str
    columns: tuple[ReadColumn, ...]
    task_names: tuple[str, ...]

    @property
    def column_names(self) -> list[str]:
        return [column.feature.name for column in self.columns]

    @property
    def row_bytes(self) -> int:
        """Approximate decoded bytes per row (variable-length features counted as one value)."""
        return sum(max(c.feature.length, 1) * c.feature.numpy_dtype.itemsize for c in self.columns)

    def by_name(self, name: str) -> Optional[ReadColumn]:
        return next((column for column in self.columns if column.name == name), None)


def plan_features(
    config: RecapDataConfig, with_labels: bool = True, schema: Optional[dict[str, SegDenseFeature]] = None
) -> FeaturePlan:
    """The columns to read: listed features, renamed features and (unless inference) task labels.

    A used name missing from the schema fails here, before any file is opened.
    """
    segdense = config.seg_dense_schema
    schema = load_segdense_schema(segdense.schema_path) if schema is None else schema
    new_name_of = {old: new for new, old in segdense.renamed_features.items()}
    wanted = list(segdense.features) + list(segdense.renamed_features.values())
    if with_labels:
        wanted += list(config.tasks)
    columns: list[ReadColumn] = []
    seen: set[str] = set()
    for source_name in wanted:
        if source_name in seen:
            continue
        seen.add(source_name)
        feature = schema.get(source_name)
        if feature is None:
            raise ValueError(f"feature '{source_name}' is missing from segdense schema {segdense.schema_path}")
        is_label = with_labels and source_name in config.tasks
        label_types = ("int64_list", "float_list") if getattr(config, "soft_labels", False) else ("int64_list",)
        if is_label and (feature.length != 1 or feature.dtype not in label_types):
            raise ValueError(
                f"label '{source_name}' must be {' or '.join(label_types)} of length 1 in {segdense.schema_path}; "
                f"found {feature.dtype} of length {feature.length}"
                + ("" if len(label_types) > 1 else " (soft_labels: true allows float_list)")
            )
        columns.append(ReadColumn(feature, new_name_of.get(source_name, source_name), is_label))
    for name, bits in segdense.mask_mantissa_features.items():
        column = next((c for c in columns if c.name == name), None)
        if column is None or column.feature.dtype != "float_list":
            raise ValueError(
                f"mask_mantissa_features names '{name}', which must be a float_list feature that is read "
                f"(listed in features or renamed_features)"
            )
        if not 0 <= bits <= 23:
            raise ValueError(f"mask_mantissa_features['{name}'] = {bits}; expected 0..23 mantissa bits")
    task_names = tuple(config.tasks) if with_labels else ()
    return FeaturePlan(segdense.schema_path, tuple(columns), task_names)
