"""Generators' output folders: refused when they hold other files, earlier own files replaced only
when asked, and nothing else ever deleted."""
from __future__ import annotations

import json

import pytest

from tml.common.entry_point import CommandError
from tml.common.filesystem.generated_files import MANIFEST_NAME, OutputDirNotEmpty, claim_output_dir


def _names(folder) -> set[str]:
    return {path.name for path in folder.iterdir()}


def test_an_absent_or_empty_folder_is_claimed_and_the_manifest_lists_the_planned_files(tmp_path):
    out = tmp_path / "new" / "data"
    claim_output_dir(str(out), ["part-00001.parquet", "part-00000.parquet"], "gen", replace=False)
    assert _names(out) == {MANIFEST_NAME}
    assert json.loads((out / MANIFEST_NAME).read_text()) == {"command": "gen", "files": ["part-00000.parquet", "part-00001.parquet"]}


def test_earlier_generated_files_are_refused_then_replaced_only_when_asked(tmp_path):
    claim_output_dir(str(tmp_path), ["a.parquet", "b.parquet", "c.parquet"], "gen", replace=False)
    for name in ("a.parquet", "b.parquet", "c.parquet"):
        (tmp_path / name).write_text("old")
    with pytest.raises(OutputDirNotEmpty, match=r"already holds 3 generated files .*pass --overwrite"):
        claim_output_dir(str(tmp_path), ["a.parquet"], "gen", replace=False)
    assert _names(tmp_path) == {MANIFEST_NAME, "a.parquet", "b.parquet", "c.parquet"}  # a refusal changes nothing
    claim_output_dir(str(tmp_path), ["a.parquet"], "gen", replace=True)
    assert _names(tmp_path) == {MANIFEST_NAME}  # b and c would otherwise have stayed on for a glob to read
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["files"] == ["a.parquet"]


def test_files_tml_did_not_generate_are_refused_even_with_replace_and_never_deleted(tmp_path):
    claim_output_dir(str(tmp_path), ["a.parquet"], "gen", replace=False)
    (tmp_path / "a.parquet").write_text("old")
    (tmp_path / "mine.parquet").write_text("the user's")
    (tmp_path / "model").mkdir()
    for replace in (False, True):
        with pytest.raises(OutputDirNotEmpty, match=r"holds 2 entries that tml did not generate there \(mine.parquet, model\)"):
            claim_output_dir(str(tmp_path), ["a.parquet"], "gen", replace=replace)
    assert _names(tmp_path) == {MANIFEST_NAME, "a.parquet", "mine.parquet", "model"}
    assert issubclass(OutputDirNotEmpty, CommandError)  # printed as one line by every command


def test_a_folder_without_manifest_is_not_ours(tmp_path):
    (tmp_path / "part-00000.parquet").write_text("someone else's file with our naming")
    with pytest.raises(OutputDirNotEmpty, match="did not generate"):
        claim_output_dir(str(tmp_path), ["part-00000.parquet"], "gen", replace=True)
    assert (tmp_path / "part-00000.parquet").read_text() == "someone else's file with our naming"


def test_generate_random_graph_refuses_a_folder_with_an_earlier_larger_graph(tmp_path, capsys):
    from tml.projects.twhin.data.generate_random_graph import main

    graph = ["--table", "user=50", "--relation", "fav:user:user", "--out_dir", str(tmp_path)]
    assert main([*graph, "--num_edges", "400", "--num_files", "4"]) == 0
    assert main([*graph, "--num_edges", "200", "--num_files", "2"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "already holds 4 generated files" in error and "--overwrite" in error
    assert main([*graph, "--num_edges", "200", "--num_files", "2", "--overwrite"]) == 0
    assert _names(tmp_path) == {MANIFEST_NAME, "part-00000.parquet", "part-00001.parquet"}
    (tmp_path / "notes.txt").write_text("mine")
    assert main([*graph, "--num_edges", "200", "--num_files", "2", "--overwrite"]) == 1
    assert (tmp_path / "notes.txt").exists() and (tmp_path / "part-00001.parquet").exists()


def test_generate_random_data_refuses_then_replaces_its_own_files(tmp_path, capsys):
    from pathlib import Path

    from tml.projects.home.recap.data.generate_random_data import main

    config = Path(__file__).resolve().parents[2] / "projects" / "home" / "recap" / "config" / "local.yaml"
    out = tmp_path / "data"
    common = ["--config_path", str(config), "--output_dir", str(out), "--n_examples", "40", "--rows_per_row_group", "16"]
    assert main([*common, "--num_files", "4"]) == 0
    assert main([*common, "--num_files", "2"]) == 1
    assert "already holds 4 generated files" in capsys.readouterr().err
    assert main([*common, "--num_files", "2", "--overwrite"]) == 0
    assert _names(out) == {MANIFEST_NAME, "part-00000.parquet", "part-00001.parquet"}
