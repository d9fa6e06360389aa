"""TwHIN's `--mode train` trains without evaluating; `--mode evaluate` then evaluates its checkpoints
(AUC and link prediction) at their steps, marks them and stops after the last."""
from __future__ import annotations

import pytest

from tml.projects.twhin.data.generate_random_graph import write_random_graph
from tml.projects.twhin.run import main
from twhin_helpers import CONFIG_DIR

LOCAL = str(CONFIG_DIR / "local.yaml")
TABLES = {"user": 1000, "tweet": 500}
RELATIONS = [(name, "user", "tweet") for name in ("fav", "reply", "retweet", "magic_recs")]


def _steps(event_dir: str, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(event_dir)
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


@pytest.mark.slow
def test_train_then_evaluate_the_checkpoints(tmp_path, capsys):
    graph = str(tmp_path / "graph")
    write_random_graph(graph, TABLES, RELATIONS, 2000, num_files=2, seed=3)
    save_dir = str(tmp_path / "run")
    settings = [f"train_data.data_root={graph}/*.parquet", f"validation_data.data_root={graph}/*.parquet",
                "train_data.limit=1800", "validation_data.limit=200", "validation_data.offset=1800",
                "training.num_train_steps=4", "training.checkpoint_every_n=2", "training.train_log_every_n=2",
                "training.eval_timeout_in_s=5"]
    arguments = ["--config_yaml_path", LOCAL, "--save_dir", save_dir] + [a for s in settings for a in ("--set", s)]
    # No evaluator runs beside this trainer: it waits for one once (0.5 s), warns, and goes on.
    waiting = ["--set", "training.wait_for_evaluators=true", "--set", "training.eval_timeout_in_s=0.5"]
    assert main(arguments + waiting + ["--mode", "train"]) == 0
    captured = capsys.readouterr()
    assert "eval validation" not in captured.out
    assert (captured.out + captured.err).count("no evaluator marked") == 1
    assert main(arguments + ["--mode", "evaluate"]) == 0
    output = capsys.readouterr().out
    assert "evaluated the last checkpoint (step 4 of 4)" in output
    # Both checkpoints exist before the evaluator starts: it takes the newest, as the original did.
    assert _steps(f"{save_dir}/tensorboard/eval_validation", "AUC") == [4]
    assert _steps(f"{save_dir}/tensorboard/eval_validation", "filtered/mrr") == [4]
    assert (tmp_path / "run" / "4" / "evaled_by" / "validation_DONE").exists()
