"""`runtime.wandb`: the scalars TensorBoard gets also reach a wandb run (offline here: no API key),
with the job's config as the run's config; a missing package or key file is a one-line error."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tml.core.config import load_config_from_yaml

pytest.importorskip("wandb")

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_YAML = REPO_ROOT / "projects" / "home" / "recap" / "config" / "local.yaml"
TINY = [
    "training.num_train_steps=4", "training.checkpoint_every_n=4", "training.eval_log_every_n=4",
    "training.train_log_every_n=2", "training.num_eval_steps=2", "train_data.global_batch_size=16",
    *[f'validation_data."{name}".global_batch_size=16' for name in ("validation", "train", "recap.engagement.is_replied")],
]


@pytest.fixture
def recap_home(tmp_path, monkeypatch) -> Path:
    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.home.recap.data.generate_random_data import generate_random_data

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TML_BASE", str(REPO_ROOT))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DIR"):
        monkeypatch.delenv(name, raising=False)
    config = load_config_from_yaml(RecapConfig, LOCAL_YAML)
    data_dir = tmp_path / "tmp" / "tml" / "recap_local" / "data"
    generate_random_data(config.train_data, str(data_dir), n_examples=640, num_files=10, rows_per_row_group=32)
    return tmp_path


def _args(save_dir: Path, *overrides: str) -> list[str]:
    sets = [*TINY, f"training.save_dir={save_dir}", *overrides]
    return ["--config_path", str(LOCAL_YAML)] + [item for override in sets for item in ("--set", override)]


def _tensorboard(folder: Path) -> dict[tuple[str, int], float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {(tag, event.step): event.value for tag in accumulator.Tags()["scalars"] for event in accumulator.Scalars(tag)}


def test_recap_logs_the_tensorboard_scalars_to_an_offline_wandb_run(recap_home):
    from wandb_offline import read_offline_run

    from tml.projects.home.recap.main import main

    save_dir = recap_home / "run"
    wandb = "runtime.wandb={project: tml-test, name: tiny, tags: [ci], metadata: {owner: tests}}"
    assert main(_args(save_dir, wandb)) == 0
    (run_folder,) = (save_dir / "wandb").glob("offline-run-*")
    config, history = read_offline_run(run_folder)
    assert config["training"]["num_train_steps"] == 4 and config["owner"] == "tests"
    assert list(config["model"]["tasks"])[0] == "recap.engagement.is_favorited"
    logged = {(key, row["_step"]): value for row in history for key, value in row.items() if not key.startswith("_")}
    expected = {}
    for run in ("train", "eval_validation", "eval_train", "eval_recap.engagement.is_replied"):
        expected.update({(f"{run}/{tag}", step): value
                         for (tag, step), value in _tensorboard(save_dir / "tensorboard" / run).items()})
    assert ("train/loss", 2) in expected and ("eval_validation/auroc/recap.engagement.is_favorited", 4) in expected
    assert set(logged) == set(expected)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key


def test_a_missing_key_file_stops_the_job_before_training(recap_home, capsys):
    from tml.projects.home.recap.main import main

    assert main(_args(recap_home / "run", "runtime.wandb={key_path: /nowhere/key}")) == 2  # a config error
    assert "runtime.wandb.key_path: no such file: /nowhere/key" in capsys.readouterr().err
    assert not (recap_home / "run").exists()


def test_without_the_package_the_command_prints_one_line(tmp_path):
    """A `wandb` that fails to import stands in for the package being absent."""
    fake = tmp_path / "fake" / "wandb"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named wandb')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "fake"), "HOME": str(tmp_path), "TML_BASE": str(REPO_ROOT)}
    command = [sys.executable, "-m", "tml.projects.twhin.run", "--config_yaml_path",
               str(REPO_ROOT / "projects" / "twhin" / "config" / "nations.yaml"),
               "--save_dir", str(tmp_path / "run"), "--set", "runtime.wandb={project: p}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: runtime.wandb is set but the 'wandb' package is not installed: pip install 'tml[wandb]' "
        "(or remove runtime.wandb)"
    )
