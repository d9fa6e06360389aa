"""Input file selection: globs, date and hour partitions with missing-data tolerance, num_files_to_keep."""
from __future__ import annotations

import os
import re

import pytest

from tml.core.errors import DataError  # the commands print it in one line, without a traceback
from tml.projects.home.recap.data import config as data_config
from tml.projects.home.recap.data.file_listing import list_input_files

BASE = {"global_batch_size": 4, "seg_dense_schema": {"schema_path": "s.json"}, "tasks": {"a": {}}}


def _config(**fields) -> data_config.RecapDataConfig:
    return data_config.RecapDataConfig.model_validate(dict(BASE, **fields))


def _touch(path) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
    return str(path)


def test_glob_sorted_and_cut_to_num_files_to_keep(tmp_path):
    for name in ("b.parquet", "a.parquet", "c.parquet"):
        _touch(tmp_path / name)
    files = list_input_files(_config(inputs=f"{tmp_path}/*.parquet", num_files_to_keep=2))
    assert [os.path.basename(f) for f in files] == ["a.parquet", "b.parquet"]


def test_empty_glob_names_the_pattern(tmp_path):
    pattern = f"{tmp_path}/nothing/*.parquet"
    with pytest.raises(DataError, match=re.escape(f"no data files match inputs '{pattern}'")):
        list_input_files(_config(inputs=pattern))


def test_fsspec_memory_glob():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/recap_listing/x.parquet", b"")
    fs.pipe("/recap_listing/y.parquet", b"")
    files = list_input_files(_config(inputs="memory://recap_listing/*.parquet"))
    assert files == ["memory:///recap_listing/x.parquet", "memory:///recap_listing/y.parquet"]


def _days(tmp_path, days: list[str]) -> None:
    for day in days:
        _touch(tmp_path / day / "part-0.parquet")
        _touch(tmp_path / day / "_SUCCESS")  # not Parquet: ignored


def test_date_inputs_end_inclusive_with_missing_day_inside_tolerance(tmp_path):
    _days(tmp_path, ["2023/02/27", "2023/03/01"])  # 2023/02/28 missing; 2023/02/26 is before the window
    _touch(tmp_path / "2023/02/26/part-0.parquet")
    inputs = {"data_root": str(tmp_path), "end_date": "2023/03/01", "days": 3, "num_missing_days_tol": 1}
    files = list_input_files(_config(explicit_date_inputs=inputs))
    assert files == [str(tmp_path / "2023/02/27/part-0.parquet"), str(tmp_path / "2023/03/01/part-0.parquet")]


def test_date_inputs_missing_day_outside_tolerance(tmp_path):
    _days(tmp_path, ["2023/02/27", "2023/03/01"])
    os.makedirs(tmp_path / "2023/02/28")  # present but empty counts as missing
    inputs = {"data_root": str(tmp_path), "end_date": "2023/03/01", "days": 3}
    with pytest.raises(DataError, match=r"1 days of data are missing or empty, more than the tolerance of 0: .*2023/02/28"):
        list_input_files(_config(explicit_date_inputs=inputs))


def test_datetime_inputs_include_the_end_hour(tmp_path):
    for hour in ("2023/01/01/22", "2023/01/01/23", "2023/01/02/00"):
        _touch(tmp_path / hour / "data.parquet")
    inputs = {"data_root": str(tmp_path), "end_datetime": "2023/01/02/00", "hours": 2}
    files = list_input_files(_config(explicit_datetime_inputs=inputs))
    assert files == [str(tmp_path / "2023/01/01/23/data.parquet"), str(tmp_path / "2023/01/02/00/data.parquet")]


def test_datetime_inputs_missing_hours(tmp_path):
    _touch(tmp_path / "2023/01/02/00/data.parquet")
    inputs = {"data_root": str(tmp_path), "end_datetime": "2023/01/02/00", "hours": 3, "num_missing_hours_tol": 1}
    with pytest.raises(DataError, match="2 hours of data are missing or empty, more than the tolerance of 1"):
        list_input_files(_config(explicit_datetime_inputs=inputs))


def test_bad_end_date_format():
    inputs = {"data_root": "/d", "end_date": "2023-03-01", "days": 1}
    with pytest.raises(ValueError, match="explicit_date_inputs.end_date '2023-03-01' does not match the format YYYY/MM/DD"):
        list_input_files(_config(explicit_date_inputs=inputs))
