"""The Heavy Ranker entry point: configs load, task mismatches stop it at start-up, and it trains and
evaluates end to end (one process, the debug loop, two processes under torchrun)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from tml.core.config import ConfigError, load_config_from_yaml
from tml.projects.home.recap.config import JobMode, RecapConfig, TrainingConfig
from tml.projects.home.recap.data.generate_random_data import generate_random_data
from tml.projects.home.recap.job import check_tasks
from tml.projects.home.recap.main import main

REPO_ROOT = Path(__file__).resolve().parents[4]
CONFIG_DIR = REPO_ROOT / "projects" / "home" / "recap" / "config"
LOCAL_YAML = CONFIG_DIR / "local.yaml"
LOCAL_PROD_YAML = CONFIG_DIR / "local_prod.yaml"
from original_configs import ORIGINAL_DIR

ORIGINAL_YAML = ORIGINAL_DIR / "recap_local_prod.yaml"

MODEL_TASKS = [
    "recap.engagement.is_favorited",
    "recap.engagement.is_replied",
    "recap.engagement.is_retweeted",
    "recap.engagement.is_good_clicked_convo_desc_v2",
    "recap.engagement.is_negative_feedback_v2",
]
VALIDATION_SETS = ("validation", "train", "recap.engagement.is_replied")
TINY = [
    "training.num_train_steps=4",
    "training.checkpoint_every_n=2",
    "training.eval_log_every_n=2",
    "training.train_log_every_n=2",
    "training.num_eval_steps=2",
    "train_data.global_batch_size=16",
    *[f'validation_data."{name}".global_batch_size=16' for name in VALIDATION_SETS],
]


def _environment(home: Path) -> dict[str, str]:
    return {"HOME": str(home), "TML_BASE": str(REPO_ROOT)}


@pytest.fixture(scope="module")
def local_home(tmp_path_factory) -> Path:
    """A HOME holding local.yaml's data folder: 10 files of 64 rows in row groups of 32 (so two ranks
    can share the one held-out file)."""
    home = tmp_path_factory.mktemp("home")
    with mock.patch.dict(os.environ, _environment(home)):
        config = load_config_from_yaml(RecapConfig, LOCAL_YAML)
    data_dir = home / "tmp" / "tml" / "recap_local" / "data"
    generate_random_data(config.train_data, str(data_dir), n_examples=640, num_files=10, rows_per_row_group=32)
    return home


def _sets(overrides: list[str]) -> list[str]:
    return [argument for override in overrides for argument in ("--set", override)]


def _subprocess_env(home: Path) -> dict[str, str]:
    return {**os.environ, **_environment(home), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _scalar_tags(event_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(event_dir))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


def _assert_trained_and_evaluated(save_dir: Path, output: str) -> None:
    assert sorted(p.name for p in save_dir.iterdir() if p.name.isdigit()) == ["2", "4"]
    tensorboard = save_dir / "tensorboard"
    assert "loss" in _scalar_tags(tensorboard / "train")
    for name in ("validation", "train"):
        tags = _scalar_tags(tensorboard / f"eval_{name}")
        for task in MODEL_TASKS:
            assert {f"auroc/{task}", f"rce/{task}", f"nrce/{task}", f"calibration/{task}"} <= tags
    replied_tags = {tag for tag in _scalar_tags(tensorboard / "eval_recap.engagement.is_replied") if "/" in tag}
    assert {tag.split("/", 1)[1] for tag in replied_tags} == {"recap.engagement.is_replied"}
    assert f"Checkpoints: {save_dir}" in output
    assert f"tensorboard --logdir {tensorboard}" in output


def test_original_yaml_loads_unchanged(monkeypatch):
    if not ORIGINAL_YAML.exists():
        pytest.skip("the original repository's recap_local_prod.yaml is not on this machine (point TML_ORIGINAL_CONFIGS at its config folder)")
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.setenv("TML_BASE", "/repo")
    config = load_config_from_yaml(RecapConfig, ORIGINAL_YAML)
    assert config.training.num_train_steps == 10 and config.training.save_dir == "/home/someone/tmp/runs/recap_local_debug"
    assert config.runtime.enable_amp is False
    assert len(config.model.tasks) == 10 and len(config.train_data.tasks) == 13
    assert len(config.validation_data) == 12
    assert config.which_metrics is None
    check_tasks(config)  # 10 model tasks among 13 labels; each set evaluates one model task


@pytest.mark.parametrize("path", [LOCAL_YAML, LOCAL_PROD_YAML], ids=["local", "local_prod"])
def test_repository_configs_load_and_pass_the_task_check(path, monkeypatch):
    monkeypatch.setenv("TML_BASE", str(REPO_ROOT))
    config = load_config_from_yaml(RecapConfig, path)
    check_tasks(config, str(path))
    assert Path(config.train_data.seg_dense_schema.schema_path).exists()


def test_training_config_drops_num_epochs_and_trains_a_million_steps_by_default():
    assert TrainingConfig().num_train_steps == 1_000_000
    assert "num_epochs" not in TrainingConfig.model_fields
    with pytest.raises(ConfigError, match="num_epochs"):
        load_config_from_yaml(RecapConfig, LOCAL_YAML, ["training.num_epochs=2"])
    assert [mode.value for mode in JobMode] == ["train", "evaluate", "inference"]


def _main_args(home: Path, *overrides: str) -> list[str]:
    return ["--config_path", str(LOCAL_YAML), *_sets([f"training.save_dir={home}/run", *overrides])]


@pytest.fixture
def home_env(tmp_path, monkeypatch) -> Path:
    """HOME and TML_BASE for an in-process main (which would otherwise set TML_BASE for good)."""
    for name, value in _environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    return tmp_path


def _fails_with_config_error(args: list[str], capsys, pattern: str) -> None:
    """The command exits 2 and prints the config error in one line, no traceback."""
    assert main(args) == 2
    error = capsys.readouterr().err
    assert re.search(pattern, error), error
    assert error.startswith("error: ") and "Traceback" not in error


def test_model_task_without_a_label_fails_at_start_up(home_env, capsys):
    tmp_path = home_env
    tower = "{mlp_config: {layer_sizes: [1]}}"
    args = _main_args(tmp_path, f'model.tasks."recap.engagement.is_shared"={tower}')
    expected = (
        r"model.tasks \['recap.engagement.is_shared'\] have no label in train_data.tasks; .* "
        r"train_data.tasks: \['recap.engagement.is_bookmarked', 'recap.engagement.is_favorited'"
    )
    _fails_with_config_error(args, capsys, expected)
    assert not (tmp_path / "run").exists()


def test_evaluation_task_that_is_not_a_model_task_fails_at_start_up(home_env, capsys):
    tmp_path = home_env
    args = _main_args(tmp_path, "validation_data.validation.evaluation_tasks=[recap.engagement.is_bookmarked]")
    expected = (
        r"validation_data.validation.evaluation_tasks \['recap.engagement.is_bookmarked'\] are not model "
        r"tasks; .* model.tasks: \['recap.engagement.is_favorited', 'recap.engagement.is_replied'"
    )
    _fails_with_config_error(args, capsys, expected)


def test_validation_set_without_a_model_task_label_fails_at_start_up(home_env, capsys):
    tmp_path = home_env
    args = _main_args(tmp_path, "validation_data.train.tasks={recap.engagement.is_favorited: {}}")
    expected = r"validation_data.train.tasks lacks model tasks \['recap.engagement.is_replied', .*\]"
    _fails_with_config_error(args, capsys, expected)


def test_command_line_reports_a_task_mismatch_without_traceback(tmp_path):
    command = [sys.executable, "-m", "tml.projects.home.recap.main",
               *_main_args(tmp_path, "validation_data.train.evaluation_tasks=[recap.engagement.is_bookmarked]")]
    done = subprocess.run(command, env=_subprocess_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {LOCAL_YAML}: validation_data.train.evaluation_tasks ['recap.engagement.is_bookmarked'] are not")
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_main_trains_evaluates_and_writes_checkpoints_and_tensorboard(local_home, tmp_path):
    save_dir = tmp_path / "run"
    command = [sys.executable, "-m", "tml.projects.home.recap.main", "--config_path", str(LOCAL_YAML),
               *_sets([*TINY, f"training.save_dir={save_dir}"])]
    done = subprocess.run(command, env=_subprocess_env(local_home), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _assert_trained_and_evaluated(save_dir, done.stdout)
    assert "Final evaluation:" in done.stdout and "validation set 'recap.engagement.is_replied'" in done.stdout


def test_debug_loop_trains_and_evaluates_without_checkpoints(local_home, tmp_path, monkeypatch, capsys):
    for name, value in _environment(local_home).items():
        monkeypatch.setenv(name, value)
    save_dir = tmp_path / "run"
    assert main(["--config_path", str(LOCAL_YAML), "--debug_loop",
                 *_sets([*TINY, f"training.save_dir={save_dir}"])]) == 0
    output = capsys.readouterr().out
    assert "step 4/4 loss=" in output
    assert "validation set 'validation'" in output and "validation set 'train'" in output
    assert not save_dir.exists()


@pytest.mark.slow
def test_two_processes_under_torchrun(local_home, tmp_path):
    save_dir = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "tml.projects.home.recap.main", "--config_path", str(LOCAL_YAML),
               *_sets([*TINY, f"training.save_dir={save_dir}"])]
    done = subprocess.run(command, env=_subprocess_env(local_home), capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _assert_trained_and_evaluated(save_dir, done.stdout)
    assert done.stdout.count("Final evaluation:") == 1  # rank 0 reports


def test_large_embeddings_are_sharded_and_trained_with_their_own_schedule(local_home, tmp_path, monkeypatch):
    """A table over the tweet ids: built on meta, given its fused SGD, sharded; its LR is logged."""
    for name, value in _environment(local_home).items():
        monkeypatch.setenv(name, value)
    save_dir = tmp_path / "run"
    tables = "{tables: [{name: meta__tweet_id, num_embeddings: 1000000, embedding_dim: 4}], "
    optimizer = "optimizer: {init_learning_rate: 0.1, learning_rate: {constant: 0.05}}}"
    assert main(["--config_path", str(LOCAL_YAML), *_sets([
        *TINY, f"training.save_dir={save_dir}", f"model.large_embeddings={tables}{optimizer}"])]) == 0
    train_tags = _scalar_tags(save_dir / "tensorboard" / "train")
    assert {"lr/embeddings", "lr/backbone", "lr/recap.engagement.is_favorited"} <= train_tags
    assert (save_dir / "4").is_dir()
