import subprocess
import sys
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tml.tools.pq import format_value, main


def first_table() -> pa.Table:
    return pa.table(
        {
            "label": pa.array([1, 0, 1, 1], pa.int64()),
            "score": pa.array([0.5, 0.25, None, 2.0], pa.float32()),
            "name": ["ann", "bob", "ann", "cy"],
            "embedding": [[float(i)] * 10 for i in range(4)],
        }
    )


def second_table() -> pa.Table:
    return pa.table(
        {
            "label": pa.array([0, 1], pa.int64()),
            "score": pa.array([1.5, 3.0], pa.float32()),
            "name": ["dee", "ann"],
            "embedding": [[9.0, 8.0], []],
        }
    )


@pytest.fixture
def data_dir(tmp_path):
    """Two files (4 + 2 rows; the first in two row groups) and a writer's _SUCCESS marker."""
    folder = tmp_path / "data"
    folder.mkdir()
    pq.write_table(first_table(), folder / "part-0.parquet", row_group_size=3)
    pq.write_table(second_table(), folder / "part-1.parquet")
    (folder / "_SUCCESS").write_text("")
    return folder


def run_pq(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_schema_lists_columns_types_files_and_rows(capsys, data_dir):
    code, out, err = run_pq(capsys, data_dir, "schema")
    assert (code, err) == (0, "")
    assert out == [
        "column     type",
        "---------  ---------------------",
        "label      int64",
        "score      float",
        "name       string",
        "embedding  list<element: double>",
        "",
        f"2 file(s), 6 rows (from Parquet metadata); schema of '{data_dir}/part-0.parquet'",
    ]


def test_schema_of_chosen_columns_and_a_note_for_differing_files(capsys, tmp_path):
    pq.write_table(pa.table({"a": [1], "b": ["x"]}), tmp_path / "one.parquet")
    pq.write_table(pa.table({"a": [2.0], "b": ["y"]}), tmp_path / "two.parquet")
    code, out, _ = run_pq(capsys, tmp_path / "*.parquet", "schema", "--columns", "b")
    assert code == 0
    assert out[:3] == ["column  type", "------  ------", "b       string"]
    assert out[-1] == f"note: 1 file(s) have a different schema, e.g. '{tmp_path}/two.parquet'"


def test_count_reads_rows_per_file_from_metadata(capsys, data_dir):
    code, out, _ = run_pq(capsys, data_dir, "count")
    assert code == 0
    path0, path1 = f"{data_dir}/part-0.parquet", f"{data_dir}/part-1.parquet"
    width = len(path0)
    assert out == [
        "file".ljust(width) + "  rows  row groups",
        "-" * width + "  ----  ----------",
        path0 + "     4           2",
        path1 + "     2           1",
        "total (2 files)".ljust(width) + "     6           3",
    ]


def test_head_prints_an_aligned_table_across_files(capsys, data_dir):
    code, out, _ = run_pq(capsys, data_dir, "head", "--num", "5", "--layout", "table")
    assert code == 0
    assert out == [
        "label  score  name  embedding",
        "-----  -----  ----  -------------------------",
        "    1    0.5  ann   [0.0, 0.0, 0.0, ... (10)]",
        "    0   0.25  bob   [1.0, 1.0, 1.0, ... (10)]",
        "    1   null  ann   [2.0, 2.0, 2.0, ... (10)]",
        "    1    2.0  cy    [3.0, 3.0, 3.0, ... (10)]",
        "    0    1.5  dee   [9.0, 8.0]",
        "(5 row(s))",
    ]


def test_head_defaults_to_ten_rows_and_stops_at_the_end(capsys, data_dir):
    code, out, _ = run_pq(capsys, data_dir, "head", "--columns", "name")
    assert code == 0
    assert out == ["name", "----", "ann", "bob", "ann", "cy", "dee", "ann", "(6 row(s))"]


def test_head_vertical_layout(capsys, data_dir):
    code, out, _ = run_pq(
        capsys, data_dir / "part-1.parquet", "head", "--layout", "vertical", "--columns", "name,embedding"
    )
    assert code == 0
    assert out == [
        "-[ row 0 ]---",
        "name      | dee",
        "embedding | [9.0, 8.0]",
        "-[ row 1 ]---",
        "name      | ann",
        "embedding | []",
        "(2 row(s))",
    ]


def test_head_switches_to_vertical_when_the_table_is_wider_than_the_terminal(capsys, data_dir, monkeypatch):
    monkeypatch.setenv("COLUMNS", "30")
    _, out, _ = run_pq(capsys, data_dir, "head", "--num", "1")
    assert out[0] == "-[ row 0 ]---" and out[1] == "label     | 1"
    monkeypatch.setenv("COLUMNS", "200")
    _, out, _ = run_pq(capsys, data_dir, "head", "--num", "1")
    assert out[0] == "label  score  name  embedding"


def test_distinct_counts_values_most_frequent_first(capsys, data_dir):
    code, out, _ = run_pq(capsys, data_dir, "distinct", "--columns", "name,label")
    assert code == 0
    assert out == [
        "name: 4 distinct value(s) in 6 row(s)",
        "  count  value",
        "  -----  -----",
        "      3  ann",
        "      1  bob",
        "      1  cy",
        "      1  dee",
        "",
        "label: 2 distinct value(s) in 6 row(s)",
        "  count  value",
        "  -----  -----",
        "      4  1",
        "      2  0",
    ]


def test_distinct_over_the_first_rows_only_and_of_list_values(capsys, data_dir):
    code, out, _ = run_pq(capsys, data_dir, "distinct", "--columns", "embedding", "--num", "2")
    assert code == 0
    assert out == [
        "embedding: 2 distinct value(s) in 2 row(s)",
        "  count  value",
        "  -----  -------------------------",
        "      1  [0.0, 0.0, 0.0, ... (10)]",
        "      1  [1.0, 1.0, 1.0, ... (10)]",
    ]


def test_glob_and_single_file_paths(capsys, data_dir):
    code, out, _ = run_pq(capsys, data_dir / "part-1*", "count")
    assert code == 0 and out[-1].split() == ["total", "(1", "files)", "2", "1"]
    code, out, _ = run_pq(capsys, data_dir / "part-0.parquet", "count")
    assert code == 0 and out[-1].split() == ["total", "(1", "files)", "4", "2"]


def test_remote_fsspec_path(capsys):
    memory = fsspec.filesystem("memory")
    folder = f"/test-pq-{uuid.uuid4().hex}"
    try:
        with memory.open(f"{folder}/part-0.parquet", "wb") as handle:
            pq.write_table(second_table(), handle)
        code, out, _ = run_pq(capsys, f"memory://{folder}", "head", "--columns", "label,name")
        assert code == 0 and out == ["label  name", "-----  ----", "    0  dee", "    1  ann", "(2 row(s))"]
        code, out, _ = run_pq(capsys, f"memory://{folder}/*.parquet", "count")
        assert code == 0 and out[2].startswith(f"memory://{folder}/part-0.parquet")
    finally:
        memory.rm(folder, recursive=True)


def test_no_match_names_the_pattern(capsys, tmp_path):
    code, out, err = run_pq(capsys, tmp_path / "*.parquet", "schema")
    assert (code, out) == (1, [])
    assert err == f"error: no file matches the pattern '{tmp_path}/*.parquet'\n"


def test_glob_skips_bookkeeping_files_and_directories(capsys, data_dir):
    code, out, _ = run_pq(capsys, data_dir / "*", "count")
    assert code == 0 and out[-1].split() == ["total", "(2", "files)", "6", "3"]
    code, _, err = run_pq(capsys, data_dir / "_*", "count")
    assert code == 1
    assert err == f"error: only bookkeeping files (such as _SUCCESS) match the pattern '{data_dir}/_*'\n"
    (data_dir / "subfolder").mkdir()
    code, out, _ = run_pq(capsys, data_dir / "*", "count")  # the one lister: data files only
    assert code == 0 and out[-1].split() == ["total", "(2", "files)", "6", "3"]


def test_missing_path_and_empty_directory(capsys, tmp_path):
    code, _, err = run_pq(capsys, tmp_path / "absent.parquet", "count")
    assert code == 1 and err == f"error: no such file or directory: '{tmp_path}/absent.parquet'\n"
    code, _, err = run_pq(capsys, tmp_path, "count")
    assert code == 1 and err == f"error: no .parquet files under the directory '{tmp_path}'\n"


def test_unknown_column_is_named_with_the_available_ones(capsys, data_dir):
    code, out, err = run_pq(capsys, data_dir, "head", "--columns", "label,labl")
    assert (code, out) == (1, [])
    assert err == (
        f"error: unknown column 'labl' in '{data_dir}/part-0.parquet'; "
        "available columns: label, score, name, embedding\n"
    )


def test_a_file_that_is_not_parquet(capsys, tmp_path):
    (tmp_path / "fake.parquet").write_text("just text, no footer")
    code, _, err = run_pq(capsys, tmp_path / "fake.parquet", "schema")
    assert code == 1
    assert err.startswith(f"error: '{tmp_path}/fake.parquet' is not a readable Parquet file: ")


def test_reads_above_the_size_limit_are_refused(capsys, data_dir):
    code, out, err = run_pq(capsys, data_dir, "head", "--max-mb", "0.0001")
    assert (code, out) == (1, [])
    assert "error: reading 10 rows of 4 column(s) would decode at least" in err
    assert "ask for fewer rows (--num) or columns (--columns), or raise --max-mb" in err


def test_usage_errors_return_two(capsys, data_dir):
    assert main([str(data_dir), "explode"]) == 2
    assert "invalid choice: 'explode'" in capsys.readouterr().err
    assert main([str(data_dir), "head", "--num", "0"]) == 2
    assert "argument --num: must be at least 1, got 0" in capsys.readouterr().err
    assert main([str(data_dir), "head", "--columns", " , "]) == 1
    assert "--columns is empty" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "schema: columns and types" in capsys.readouterr().out


@pytest.mark.parametrize(
    "value, text",
    [
        (None, "null"),
        (True, "True"),
        (0.1 + 0.2, "0.3"),
        (float("nan"), "nan"),
        (12345678, "12345678"),
        (-2.0, "-2.0"),
        (1e20, "1e+20"),
        (float("inf"), "inf"),
        ([0.1, 0.2, 0.3, 0.4], "[0.1, 0.2, 0.3, 0.4]"),
        ([0.1] * 6000, "[0.1, 0.1, 0.1, ... (6000)]"),
        ({"x": 1, "y": [1, 2]}, "{x: 1, y: [1, 2]}"),
        ("two\nlines", "two\\nlines"),
        ("z" * 50, "z" * 37 + "..."),
        (b"\x00\x01", "b'\\x00\\x01'"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_module_entry_point(data_dir):
    result = subprocess.run(
        [sys.executable, "-m", "tml.tools.pq", str(data_dir), "count"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == ["total", "(2", "files)", "6", "3"]
