"""The separate evaluator: a trainer (`--mode train`) and an evaluator (`--mode evaluate`) run side
by side as two processes; the evaluator evaluates new checkpoints once each, logs their metrics at
their steps, marks them and stops after the last one; the trainer (training.wait_for_evaluators)
waits for those marks, so every checkpoint is evaluated. Alone, the evaluator stops after
eval_timeout_in_s."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tml.core.config import load_config_from_yaml

REPO_ROOT = Path(__file__).resolve().parents[4]
LOCAL_YAML = REPO_ROOT / "projects" / "home" / "recap" / "config" / "local.yaml"
SETS = ("validation", "train", "recap.engagement.is_replied")


def _command(save_dir: Path, mode: str, *overrides: str) -> list[str]:
    settings = ["training.num_train_steps=6", "training.checkpoint_every_n=2", "training.train_log_every_n=2",
                "training.num_eval_steps=2", "train_data.global_batch_size=16", "training.eval_timeout_in_s=90",
                *[f'validation_data."{name}".global_batch_size=16' for name in SETS], *overrides]
    return [sys.executable, "-m", "tml.projects.home.recap.main", "--config_path", str(LOCAL_YAML),
            "--save_dir", str(save_dir), "--mode", mode] + [a for s in settings for a in ("--set", s)]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.home.recap.data.generate_random_data import generate_random_data

    home = tmp_path_factory.mktemp("home")
    environment = {"HOME": str(home), "TML_BASE": str(REPO_ROOT)}
    previous = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        config = load_config_from_yaml(RecapConfig, LOCAL_YAML)
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    generate_random_data(config.train_data, str(home / "tmp" / "tml" / "recap_local" / "data"),
                         n_examples=640, num_files=10, rows_per_row_group=32)
    return home


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "TML_BASE": str(REPO_ROOT), "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1"}


def _steps(event_dir: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(event_dir))
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


@pytest.mark.slow
def test_trainer_and_evaluator_side_by_side(home, tmp_path):
    save_dir = tmp_path / "run"
    evaluator = subprocess.Popen(_command(save_dir, "evaluate"), env=_env(home), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
    # The trainer waits for the evaluator's marks, so pruning (max_to_keep=1) loses no checkpoint to it.
    trainer_settings = ("training.wait_for_evaluators=true", "training.checkpoint_max_to_keep=1")
    trainer = subprocess.run(_command(save_dir, "train", *trainer_settings), env=_env(home), capture_output=True,
                             text=True, timeout=240)
    assert trainer.returncode == 0, trainer.stdout[-3000:] + trainer.stderr[-3000:]
    output, _ = evaluator.communicate(timeout=240)
    assert evaluator.returncode == 0, output[-4000:]

    assert "eval " not in trainer.stdout  # the trainer evaluated nothing itself
    assert "evaluated the last checkpoint (step 6 of 6); the evaluator stops" in output
    tensorboard = save_dir / "tensorboard"
    task = "recap.engagement.is_favorited"
    evaluated = _steps(tensorboard / "eval_validation", f"auroc/{task}")
    assert evaluated == [2, 4, 6]  # every checkpoint, once each
    assert sorted(p.name for p in save_dir.iterdir() if p.name.isdigit()) == ["6"]  # 2 and 4 pruned after
    for name in SETS:
        assert (save_dir / "6" / "evaled_by" / f"{name}_DONE").exists()
    assert "waiting for the evaluator to finish" in trainer.stdout + trainer.stderr
    assert _steps(tensorboard / "eval_recap.engagement.is_replied", "auroc/recap.engagement.is_replied") == evaluated
    assert "Evaluation of step 6:" in output and "validation set 'validation'" in output

    # Run again on the finished run: every checkpoint is marked, nothing is evaluated twice.
    again = subprocess.run(_command(save_dir, "evaluate"), env=_env(home), capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "is already evaluated" in again.stdout
    assert _steps(tensorboard / "eval_validation", f"auroc/{task}") == evaluated


def test_evaluator_without_checkpoints_stops_after_the_timeout(home, tmp_path, monkeypatch):
    from tml.projects.home.recap.main import main

    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TML_BASE", str(REPO_ROOT))
    start = time.monotonic()
    command = _command(tmp_path / "empty", "evaluate", "training.eval_timeout_in_s=2")
    assert main(command[command.index("--config_path"):]) == 0
    assert time.monotonic() - start < 60
    assert not (tmp_path / "empty" / "tensorboard" / "eval_validation").exists()


def test_overwrite_is_refused_for_an_evaluator(home, tmp_path, monkeypatch, capsys):
    from tml.projects.home.recap.main import main

    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "run" / "2").mkdir(parents=True)
    command = _command(tmp_path / "run", "evaluate")
    assert main(command[command.index("--config_path"):] + ["--overwrite_save_dir"]) == 2
    assert "--overwrite_save_dir with --mode evaluate would delete the trainer's checkpoints" in capsys.readouterr().err
    assert (tmp_path / "run" / "2").exists()
