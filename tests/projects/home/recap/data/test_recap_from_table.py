"""`from_table`: a user's own table to Heavy Ranker Parquet, segdense JSON and a starter config that
trains, evaluates and scores; unused feature blocks need no columns; bad input is named."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

from tml.common import device as device_lib
from tml.core.config import load_config_from_yaml
from tml.projects.home.recap.config import RecapConfig
from tml.projects.home.recap.data.dataset import RecapDataset
from tml.projects.home.recap.data.from_table import main
from tml.projects.home.recap.job import run
from tml.projects.home.recap.score import score_candidates

ROWS = 3000


def _table(seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=ROWS)
    p = 1 / (1 + np.exp(-(-2.0 + 1.5 * x)))
    return pa.table({
        "user": rng.integers(0, 50, ROWS), "item": np.arange(ROWS), "time": rng.permutation(ROWS),
        "x": x, "scale": np.exp(rng.normal(size=ROWS)), "flag": rng.integers(0, 2, ROWS),
        "country": rng.integers(0, 7, ROWS), "click": (rng.random(ROWS) < p).astype(np.int64),
        "like": rng.integers(0, 2, ROWS),
    })


def _convert(tmp_path, *extra: str, fmt: str = "parquet") -> tuple[int, str]:
    path = str(tmp_path / f"events.{fmt}")
    if fmt == "csv":
        pcsv.write_csv(_table(), path)
    else:
        pq.write_table(_table(), path)
    return main(["--input", path, "--output_dir", str(tmp_path / "out"), *extra]), path


def test_table_becomes_down_sampled_training_data_and_a_config_that_loads(tmp_path, capsys):
    code, _ = _convert(tmp_path, "--labels", "click", "--numeric", "x,scale", "--binary", "flag",
                       "--categorical", "country", "--id_columns", "user,item", "--neg_downsampling_rate", "0.25",
                       "--split_by", "time", fmt="csv")
    assert code == 0
    out = tmp_path / "out"
    schema = json.loads((out / "segdense.json").read_text())
    assert schema["columns"] == {"numeric_values": ["x", "scale"], "binary_values": ["flag"],
                                 "categorical_values": ["country"]}
    assert {e["feature_name"]: e["length"] for e in schema["schema"]} == {
        "numeric_values": 2, "binary_values": 1, "categorical_values": 1, "click": 1, "user": 1, "item": 1}

    table = _table()
    train = pq.read_table(out / "train").to_pydict()
    validation = pq.read_table(out / "validation").to_pydict()
    # the split by time: the latest 20% validate, every one of them kept
    held_out = np.flatnonzero(table.column("time").to_numpy() >= ROWS * 0.8)
    assert sorted(validation["item"]) == held_out.tolist()
    clicks = table.column("click").to_numpy()
    train_items = np.array(train["item"])
    earlier = np.setdiff1d(np.arange(ROWS), held_out)
    assert set(earlier[clicks[earlier] == 1]) <= set(train_items)  # every positive kept
    kept_negatives = (clicks[train_items] == 0).sum() / (clicks[earlier] == 0).sum()
    assert kept_negatives == pytest.approx(0.25, abs=0.04)
    np.testing.assert_allclose(np.array(train["numeric_values"])[:, 0], table.column("x").to_numpy()[train_items], rtol=1e-6)

    config = load_config_from_yaml(RecapConfig, out / "config.yaml")
    assert config.train_data.tasks["click"].neg_downsampling_rate == 0.25
    assert config.validation_data["validation"].tasks["click"].neg_downsampling_rate == 1.0
    assert config.model.downsampling_correction.value == "calibration"
    assert config.model.small_embeddings.tables[0].num_embeddings == 7
    assert "train: python -m tml.projects.home.recap.main --config_path" in capsys.readouterr().out


def test_numeric_only_table_trains_evaluates_and_scores_by_its_own_ids(tmp_path):
    code, _ = _convert(tmp_path, "--labels", "click,like", "--numeric", "x", "--id_columns", "user,item",
                       "--train_steps", "150", "--batch_size", "64")
    assert code == 0
    config = load_config_from_yaml(RecapConfig, tmp_path / "out" / "config.yaml")
    batch = next(iter(RecapDataset(config.train_data)))
    assert batch.continuous_features.shape == (64, 1) and batch.binary_features.shape == (64, 0)
    try:
        results = run(config)
    finally:
        device_lib.teardown()
    assert results["validation"]["auroc/click"] > 0.7  # p depends on x alone
    scores = score_candidates(config, config.training.save_dir, str(tmp_path / "out" / "validation" / "*.parquet"),
                              id_columns=["user", "item"])
    assert scores.column_names == ["user", "item", "click", "like", "score", "rank"]
    assert scores.num_rows == ROWS * 0.2
    np.testing.assert_allclose(scores.column("score").to_numpy(),
                               scores.column("click").to_numpy() + scores.column("like").to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("arguments, message", [
    (["--labels", "click", "--numeric", "x,nope"], r"column\(s\) \['nope'\] are not in"),
    (["--labels", "country", "--numeric", "x"], "label column 'country' must hold 0 or 1; row"),
    (["--labels", "click", "--numeric", "x", "--binary", "scale"], "binary column 'scale' must hold integers"),
    (["--labels", "click,like", "--numeric", "x", "--neg_downsampling_rate", "0.1"], "needs exactly one label"),
    (["--labels", "click"], "no feature columns"),
    (["--labels", "click", "--numeric", "x", "--binary", "x"], r"column\(s\) \['x'\] are given more than once"),
])
def test_bad_input_is_named(tmp_path, capsys, arguments, message):
    code, _ = _convert(tmp_path, *arguments)
    assert code == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and pytest.importorskip("re").search(message, error), error
    assert not (tmp_path / "out" / "config.yaml").exists()


def test_command_line_error_has_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tml.projects.home.recap.data.from_table", "--input",
                           str(tmp_path / "missing.parquet"), "--output_dir", str(tmp_path / "out"),
                           "--labels", "click", "--numeric", "x"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no input file matches" in done.stderr and "Traceback" not in done.stderr


def test_earlier_output_is_replaced_only_with_overwrite(tmp_path, capsys):
    arguments = ["--labels", "click", "--numeric", "x", "--num_train_files", "3"]
    assert _convert(tmp_path, *arguments)[0] == 0
    assert _convert(tmp_path, *arguments)[0] == 1
    assert "pass --overwrite" in capsys.readouterr().err
    assert _convert(tmp_path, *arguments[:-1], "1", "--overwrite")[0] == 0  # fewer files: none left over
    assert sorted(p.name for p in (tmp_path / "out" / "train").glob("*.parquet")) == ["part-00000.parquet"]
    (tmp_path / "out" / "train" / "mine.txt").write_text("not tml's")
    assert _convert(tmp_path, *arguments, "--overwrite")[0] == 1
    assert "did not generate there (mine.txt)" in capsys.readouterr().err
