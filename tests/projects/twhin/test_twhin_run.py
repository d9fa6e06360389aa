"""The TwHIN entry point end to end: config/local.yaml on a small random graph, as `python -m` and
under torchrun with 2 processes; checkpoints, TensorBoard metrics, and the metrics a multi-rank
run logs equal those of its checkpoint evaluated again in one process."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tml.common.checkpointing import get_checkpoints, load_model_weights, step_from_checkpoint
from tml.core.config import ConfigError
from tml.projects.twhin.data.generate_random_graph import write_random_graph
from tml.projects.twhin.embeddings import load_table
from tml.projects.twhin.metrics import LinkPredictionEvaluator
from tml.projects.twhin.models.models import TwhinModel, TwhinModelAndLoss
from tml.common.entry_point import clear_save_dir, load_command_config
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.run import build_parser
from twhin_helpers import CONFIG_DIR, REPO_ROOT

LOCAL = str(CONFIG_DIR / "local.yaml")
LOG_TABLE_NORMS = ["--set", "model.embeddings.tables_to_log=[user, tweet]"]
TABLES = {"user": 1000, "tweet": 500}  # as in local.yaml
RELATIONS = [(name, "user", "tweet") for name in ("fav", "reply", "retweet", "magic_recs")]


def overrides(graph: str, steps: int) -> list[str]:
    settings = {
        "train_data.data_root": f"{graph}/*.parquet",
        "validation_data.data_root": f"{graph}/*.parquet",
        "train_data.limit": 1800,
        "validation_data.limit": 200,
        "validation_data.offset": 1800,
        "training.num_train_steps": steps,
        "training.checkpoint_every_n": steps // 2,
        "training.eval_log_every_n": steps // 2,
        "training.train_log_every_n": steps // 2,
    }
    return [argument for key, value in settings.items() for argument in ("--set", f"{key}={value}")]


def run_entry_point(launcher: list[str], arguments: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(launcher + ["-m", "tml.projects.twhin.run", *arguments], cwd=REPO_ROOT, env=environment,
                            capture_output=True, text=True, timeout=timeout_s)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def scalars(save_dir: str, run: str) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(save_dir, "tensorboard", run)).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.fixture(scope="module")
def graph(tmp_path_factory) -> str:
    out_dir = str(tmp_path_factory.mktemp("graph"))
    write_random_graph(out_dir, TABLES, RELATIONS, 2000, num_files=2, seed=3)
    return out_dir


def parse_args(argv: list[str]):
    return build_parser().parse_args(argv)


def load_config(args) -> TwhinConfig:
    return load_command_config(TwhinConfig, args)


def mean_row_norm(table: np.ndarray) -> float:
    return float(np.linalg.norm(table.astype(np.float64), axis=1).mean())


def test_single_process_run_writes_checkpoints_and_metrics(graph, tmp_path):
    save_dir = str(tmp_path / "model")
    result = run_entry_point([sys.executable], ["--config_yaml_path", LOCAL, "--save_dir", save_dir,
                                                *overrides(graph, 20), *LOG_TABLE_NORMS], timeout_s=120)
    assert [step_from_checkpoint(c) for c in get_checkpoints(save_dir)] == [10, 20]
    metrics = scalars(save_dir, "eval_validation")
    for tag in ("AUC", "filtered/mrr", "filtered/mrr_tail", "filtered/mrr_head", "filtered/hits@1", "filtered/hits@10"):
        assert [step for step, _ in metrics[tag]] == [10, 20], tag
    assert 0 < metrics["filtered/mrr"][-1][1] <= 1 and 0.0 <= metrics["AUC"][-1][1] <= 1.0
    assert [step for step, _ in scalars(save_dir, "train")["loss"]] == [10, 20]
    assert "eval validation @ step 20: AUC=" in result.stdout and "filtered/hits@10=" in result.stdout
    # embeddings.tables_to_log: each table's mean row norm, logged with the loss, equals the one
    # computed from the checkpoint of the same step.
    train = scalars(save_dir, "train")
    for table in TABLES:
        assert [step for step, _ in train[f"{table}-norm-0"]] == [10, 20]
        assert train[f"{table}-norm-0"][-1][1] == pytest.approx(mean_row_norm(load_table(save_dir, table)), rel=1e-5)
    assert train["user-norm-0"][0][1] != train["user-norm-0"][1][1]  # the table trained in between


def test_two_process_torchrun_logs_the_metrics_of_its_checkpoint(graph, tmp_path):
    save_dir = str(tmp_path / "model")
    arguments = ["--config_yaml_path", LOCAL, "--save_dir", save_dir, *overrides(graph, 10), *LOG_TABLE_NORMS]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    run_entry_point(launcher, arguments, timeout_s=150)
    assert [step_from_checkpoint(c) for c in get_checkpoints(save_dir)] == [5, 10]
    logged = {tag: values[-1] for tag, values in scalars(save_dir, "eval_validation").items()}

    # The final checkpoint, evaluated again by one process without any process group.
    config = load_config(parse_args(arguments))
    model = TwhinModelAndLoss(TwhinModel(config.model, device="cpu"))
    load_model_weights(model, os.path.join(save_dir, "10"))
    again = LinkPredictionEvaluator(config).evaluate(model)
    for name in ("mrr", "hits@1", "hits@10", "mrr_head", "mrr_tail"):
        step, value = logged[f"filtered/{name}"]
        assert step == 10 and value == pytest.approx(again[name], abs=1e-6), name
    # Row-wise sharded tables: each rank logs the mean norm of its own half of the rows.
    train = scalars(save_dir, "train")
    for table, rows in TABLES.items():
        weights = load_table(save_dir, table)
        for rank, part in enumerate((weights[: rows // 2], weights[rows // 2:])):
            step, value = train[f"{table}-norm-{rank}"][-1]
            assert step == 10 and value == pytest.approx(mean_row_norm(part), rel=1e-5), (table, rank)


def test_save_dir_comes_from_the_config_unless_the_flag_overrides_it(monkeypatch):
    monkeypatch.setenv("TML_OUTPUT", "/outputs")
    config = load_config(parse_args(["--config_yaml_path", LOCAL]))
    assert config.training.save_dir == "/outputs/twhin/random_graph/model"
    assert config.train_data.data_root == "/outputs/twhin/random_graph/edges/*.parquet"  # not the run's folder
    flagged = load_config(parse_args(["--config_path", LOCAL, "--save_dir", "/elsewhere"]))
    assert flagged.training.save_dir == "/elsewhere"
    with pytest.raises(ConfigError, match="num_train_steps"):
        load_config(parse_args(["--config_yaml_path", LOCAL, "--set", "training.num_train_steps=0"]))


def test_the_config_file_is_required(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--save_dir", "/tmp/x"])
    assert "the following arguments are required: --config_path/--config_yaml_path" in capsys.readouterr().err


def test_overwrite_deletes_the_checkpoints_so_training_starts_over(tmp_path):
    save_dir = tmp_path / "model"
    clear_save_dir(str(save_dir))  # nothing to delete is fine; the new directory is marked as tml's
    (save_dir / "10").mkdir()
    (save_dir / "10" / "state.distcp").write_bytes(b"x")
    clear_save_dir(str(save_dir))
    assert sorted(p.name for p in save_dir.iterdir()) == [".tml-save-dir"]
