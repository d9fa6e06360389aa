"""Heavy Ranker data configs: the original's classes, fields and defaults, read from Parquet.

Fields that only meant something to tf.data (the data service, its compression) are accepted so
existing YAML files load, and are documented as ignored. `seed` and `prefetch` are additions.
"""
from __future__ import annotations

from enum import Enum
from typing import Any, Dict, List, Optional

import pydantic
from pydantic import Field, NonNegativeInt, PositiveInt

from tml.core.config import BaseConfig

DATE_FORMAT = "%Y/%m/%d"
DATETIME_FORMAT = "%Y/%m/%d/%H"


class ExplicitDateInputs(BaseConfig):
    """Daily partitions `data_root/YYYY/MM/DD/*.parquet`, the `days` days ending at `end_date`."""

    data_root: str = Field(..., description="Folder (local or fsspec URL) holding the YYYY/MM/DD partitions.")
    end_date: str = Field(..., description=f"Last day read, inclusive, as {DATE_FORMAT.replace('%', '')}.")
    days: PositiveInt = Field(..., description="Number of days read, ending at end_date.")
    num_missing_days_tol: NonNegativeInt = Field(
        0, description="Days that may be missing or empty before loading fails."
    )


class ExplicitDatetimeInputs(BaseConfig):
    """Hourly partitions `data_root/YYYY/MM/DD/HH/*.parquet`, the `hours` hours ending at `end_datetime`."""

    data_root: str = Field(..., description="Folder (local or fsspec URL) holding the YYYY/MM/DD/HH partitions.")
    end_datetime: str = Field(
        ..., description=f"Last hour read, inclusive, as {DATETIME_FORMAT.replace('%', '')}."
    )
    hours: PositiveInt = Field(..., description="Number of hours read, ending at end_datetime.")
    num_missing_hours_tol: NonNegativeInt = Field(
        0, description="Hours that may be missing or empty before loading fails."
    )


class DdsCompressionOption(str, Enum):
    AUTO = "AUTO"


class DatasetConfig(BaseConfig):
    inputs: Optional[str] = Field(
        None,
        description="Glob of Parquet files (local or fsspec URL).",
        json_schema_extra={"one_of": "date_inputs_format"},
    )
    explicit_datetime_inputs: Optional[ExplicitDatetimeInputs] = Field(
        None, json_schema_extra={"one_of": "date_inputs_format"}
    )
    explicit_date_inputs: Optional[ExplicitDateInputs] = Field(
        None, json_schema_extra={"one_of": "date_inputs_format"}
    )

    global_batch_size: PositiveInt = Field(
        ..., description="Rows per step over all ranks; each rank reads global_batch_size / world_size."
    )

    num_files_to_keep: Optional[PositiveInt] = Field(
        None, description="Read only the first N files of the sorted file list."
    )
    repeat_files: bool = Field(
        True, description="Deprecated and ignored (as in the original); use the dataset's `repeat`."
    )
    file_batch_size: PositiveInt = Field(
        16, description="Files each reader reads one after another (see interleave_num_parallel_calls)."
    )
    cache: bool = Field(
        False,
        description="Keep every row this rank reads in memory after the first pass; only for data that fits.",
    )
    data_service_dispatcher: Optional[str] = Field(
        None, description="Ignored: the tf.data service is TensorFlow-only; every rank reads its own files."
    )
    ignore_data_errors: bool = Field(
        False,
        description="Skip (with a warning, and count) files that cannot be read or do not match the schema, "
        "and drop (and count in stats.dropped_rows) rows with a bad label or a sparse id outside its table.",
    )
    dataset_service_compression: Optional[DdsCompressionOption] = Field(
        None, description="Ignored (tf.data service only)."
    )

    examples_shuffle_buffer_size: int = Field(
        1024, description="Rows each batch is sampled from, as tf.data's shuffle buffer; <= 1 disables shuffling."
    )
    map_num_parallel_calls: Optional[PositiveInt] = Field(
        None, description="Threads assembling batches (gather, preprocess, tensors); default 1."
    )
    interleave_num_parallel_calls: Optional[PositiveInt] = Field(
        None,
        description="Readers in threads, each on its own file_batch_size files, whose row groups are taken in turn "
        "(rows of several files then mix); default 1 (pyarrow already decodes columns in parallel).",
    )

    seed: NonNegativeInt = Field(
        0, description="Seed of the file and row shuffles: same seed, data and world size give the same batches."
    )
    prefetch: NonNegativeInt = Field(
        2, description="Batches prepared ahead in a background thread; 0 prepares them on the caller's thread."
    )


class TruncateAndSlice(BaseConfig):
    """Truncation first, then the mask (indices of the truncated vector)."""

    continuous_feature_truncation: Optional[PositiveInt] = Field(
        None, description="Keep only the first N continuous features."
    )
    binary_feature_truncation: Optional[PositiveInt] = Field(
        None, description="Keep only the first N binary features."
    )
    continuous_feature_mask_path: Optional[str] = Field(
        None, description=".npy array; continuous features at its nonzero positions are kept."
    )
    binary_feature_mask_path: Optional[str] = Field(
        None, description=".npy array; binary features at its nonzero positions are kept."
    )


class DownCastType(str, Enum):
    BFLOAT16 = "bfloat16"
    BOOL = "bool"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    UINT8 = "uint8"


class DownCast(BaseConfig):
    features: Optional[Dict[str, DownCastType]] = Field(
        None, description="Feature name -> dtype it is cast to; may lose precision, compare metrics."
    )


class TaskData(BaseConfig):
    pos_downsampling_rate: float = Field(
        1.0, gt=0, description="Fraction of positives the data kept; positives get weight 1/rate."
    )
    neg_downsampling_rate: float = Field(
        1.0, gt=0, description="Fraction of negatives the data kept; negatives get weight 1/rate."
    )


class SegDenseSchema(BaseConfig):
    schema_path: str = Field(..., description="segdense JSON: {schema: [{feature_name, dtype, length}]}.")
    features: List[str] = Field(
        [], description="Schema features read in addition to the renamed features and the task labels."
    )
    renamed_features: Dict[str, str] = Field(
        {}, description="New name -> schema name; e.g. continuous -> home_recap_2022_cont__segdense_vals."
    )
    mask_mantissa_features: Dict[str, int] = Field(
        {},
        description="(experimental) float32 feature -> number of low mantissa bits zeroed, to emulate lower precision.",
    )


class RectifyLabels(BaseConfig):
    label_rectification_window_in_hours: float = Field(
        3.0, description="A positive label is kept only if impression and engagement came within this window of serving."
    )
    served_timestamp_field: str = Field(..., description="Feature holding the served time (ms).")
    impressed_timestamp_field: str = Field(..., description="Feature holding the impression time (ms).")
    label_to_engaged_timestamp_field: Dict[str, str] = Field(
        ..., description="Label -> feature holding its engagement time (ms)."
    )


class ExtractFeaturesRow(BaseConfig):
    name: str = Field(..., description="Name of the extracted feature.")
    source_tensor: str = Field(..., description="Feature it is taken from, e.g. continuous.")
    index: int = Field(..., description="Column of source_tensor.")


class ExtractFeatures(BaseConfig):
    extract_feature_table: List[ExtractFeaturesRow] = Field([], description="Features to extract.")


class DownsampleNegatives(BaseConfig):
    batch_multiplier: Optional[int] = Field(
        None, description="Rows read per kept row; the batch keeps all positives first, then negatives."
    )
    engagements_list: List[str] = Field([], description="Labels whose positives (any of them) are never dropped.")
    num_engagements: int = Field(
        ..., description="Columns of the weights created when no sampling-rate weights exist (= number of tasks)."
    )


class Preprocess(BaseConfig):
    """Applied in a fixed order: downsample_negatives, truncate_and_slice, downcast, rectify_labels, extract_features."""

    truncate_and_slice: Optional[TruncateAndSlice] = Field(None, description="Truncation and slicing.")
    downcast: Optional[DownCast] = Field(None, description="Down cast of features.")
    rectify_labels: Optional[RectifyLabels] = Field(None, description="Label rectification.")
    extract_features: Optional[ExtractFeatures] = Field(None, description="Features extracted from dense tensors.")
    downsample_negatives: Optional[DownsampleNegatives] = Field(None, description="Negative downsampling.")


class Sampler(BaseConfig):
    """Deprecated in the original and never used; kept so configs that set it still load."""

    name: str
    kwargs: Dict[str, Any]


class RecapDataConfig(DatasetConfig):
    seg_dense_schema: SegDenseSchema
    tasks: Dict[str, TaskData] = Field(
        ..., description="Label columns, in this order in the batch's labels (see RecapBatch.label_names)."
    )
    evaluation_tasks: List[str] = Field([], description="Tasks metrics are computed for; each must be in tasks.")
    soft_labels: bool = Field(
        False,
        description="Labels may be probabilities in [0, 1] (float_list label columns); otherwise every label "
        "must be 0 or 1. Either way a null or out-of-range label is refused (or dropped under ignore_data_errors).",
    )
    preprocess: Optional[Preprocess] = Field(None, description="Preprocessing at train/eval; never at inference.")
    sampler: Optional[Sampler] = Field(None, description="Deprecated, ignored.")
    remote_readers: Optional[List[str]] = Field(
        None,
        description="host:port of reader processes (tml.projects.home.recap.data.flight_reader) serving "
        "this dataset's ready batches over Arrow Flight; read round-robin instead of the files. train_data only.",
    )

    @pydantic.model_validator(mode="after")
    def _validate_evaluation_tasks(self) -> "RecapDataConfig":
        unknown = [task for task in self.evaluation_tasks if task not in self.tasks]
        if unknown:
            raise ValueError(
                f"evaluation_tasks entry '{unknown[0]}' is not in tasks; tasks are: {list(self.tasks)}"
            )
        return self
