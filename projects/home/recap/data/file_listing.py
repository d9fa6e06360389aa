"""Which files a dataset config reads: a glob, or date / hour partitions with a missing-data tolerance.

The original's explicit date inputs never ran (missing imports, an unknown keyword, days treated as
hours, the end excluded although documented inclusive). Here partitions are
`data_root/YYYY/MM/DD` (dates) and `data_root/YYYY/MM/DD/HH` (hours), both ending inclusively at
the configured end, and a partition that is missing or holds no Parquet file counts as missing.
"""
from __future__ import annotations

import datetime as dt
import posixpath

from tml.common.filesystem import util as fs_util
from tml.common.parquet import list_parquet_files
from tml.core.errors import DataError
from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.data.config import (
    DATE_FORMAT,
    DATETIME_FORMAT,
    DatasetConfig,
    ExplicitDateInputs,
    ExplicitDatetimeInputs,
)

PARQUET_SUFFIXES = (".parquet", ".pq")


def _parse(value: str, fmt: str, field: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(value, fmt)
    except ValueError:
        readable = fmt.replace("%Y", "YYYY").replace("%m", "MM").replace("%d", "DD").replace("%H", "HH")
        raise ValueError(f"{field} '{value}' does not match the format {readable}") from None


def partition_folders(data_root: str, end: dt.datetime, count: int, step: dt.timedelta, fmt: str) -> list[str]:
    """`count` partition folders ending at `end` inclusive, oldest first."""
    root = data_root.rstrip("/")
    return [posixpath.join(root, (end - step * back).strftime(fmt)) for back in reversed(range(count))]


def date_folders(inputs: ExplicitDateInputs) -> list[str]:
    end = _parse(inputs.end_date, DATE_FORMAT, "explicit_date_inputs.end_date")
    return partition_folders(inputs.data_root, end, inputs.days, dt.timedelta(days=1), DATE_FORMAT)


def datetime_folders(inputs: ExplicitDatetimeInputs) -> list[str]:
    end = _parse(inputs.end_datetime, DATETIME_FORMAT, "explicit_datetime_inputs.end_datetime")
    return partition_folders(inputs.data_root, end, inputs.hours, dt.timedelta(hours=1), DATETIME_FORMAT)


def parquet_files_in(folder: str) -> list[str]:
    return [path for path in fs_util.glob(posixpath.join(folder, "*")) if path.endswith(PARQUET_SUFFIXES)]


def files_in_partitions(folders: list[str], tolerance: int, unit: str) -> list[str]:
    """Files of all partitions; fails when more than `tolerance` partitions are missing or empty."""
    files: list[str] = []
    missing: list[str] = []
    for folder in folders:
        found = parquet_files_in(folder)
        if not found:
            missing.append(folder)
        files.extend(found)
    if len(missing) > tolerance:
        raise DataError(
            f"{len(missing)} {unit}s of data are missing or empty, more than the tolerance of {tolerance}: "
            f"{missing}"
        )
    for folder in missing:
        logging.warning(f"no Parquet files in {folder}; one {unit} of data missing (tolerance {tolerance})")
    return sorted(files)


def list_input_files(config: DatasetConfig) -> list[str]:
    """Sorted input files, cut to `num_files_to_keep`; never empty."""
    if config.inputs is not None:
        try:
            files = list_parquet_files(config.inputs)
        except FileNotFoundError as error:
            raise DataError(f"no data files match inputs '{config.inputs}': {error}") from None
    elif config.explicit_date_inputs is not None:
        inputs = config.explicit_date_inputs
        files = files_in_partitions(date_folders(inputs), inputs.num_missing_days_tol, "day")
    elif config.explicit_datetime_inputs is not None:
        inputs = config.explicit_datetime_inputs
        files = files_in_partitions(datetime_folders(inputs), inputs.num_missing_hours_tol, "hour")
    else:  # the config's one_of check makes this unreachable for validated configs
        raise ValueError("set one of inputs, explicit_date_inputs, explicit_datetime_inputs")
    if not files:
        raise DataError(f"no data files found for {config.explicit_date_inputs or config.explicit_datetime_inputs}")
    if config.num_files_to_keep is not None:
        files = files[: config.num_files_to_keep]
    return files
