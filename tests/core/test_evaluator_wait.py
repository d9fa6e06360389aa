"""A trainer that waits for its separate evaluator (training.wait_for_evaluators).

Trainer and evaluator run in one process here (the evaluator in a thread, no process group, plain
modules), which keeps the pair cheap; tests/projects/*/test_*_evaluator.py run them as commands.
"""
from __future__ import annotations

import threading
import time

import pytest
import torch
import torchmetrics

from tml.common.checkpointing import get_checkpoints, is_done_eval, step_from_checkpoint
from tml.core import custom_training_loop as loop
from tml.core.config import ConfigError
from tml.core.evaluator_wait import evaluator_sets

from loop_model import StreamDataset, TinyRanker


def _count_collection(_name: str = "") -> torchmetrics.MetricCollection:
    from tml.core.metrics.mixins import MetricMixin

    class Rows(MetricMixin, torchmetrics.SumMetric):
        def transform(self, outputs):
            return {"value": torch.ones(outputs["labels"].shape[0])}

    return torchmetrics.MetricCollection({"rows": Rows()})


def _train(save_dir, **kwargs):
    torch.manual_seed(0)
    model = TinyRanker()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return loop.train(model, optimizer, torch.device("cpu"), str(save_dir), logging_interval=1, train_steps=4,
                      checkpoint_frequency=1, dataset=StreamDataset(batch_size=8), worker_batch_size=8,
                      checkpoint_max_to_keep=1, **kwargs)


def _start_evaluator(save_dir) -> tuple[threading.Thread, dict]:
    found: dict = {}

    def follow():
        # 0.3 s per evaluation: far slower than the trainer's steps.
        heldout = {"heldout": StreamDataset(batch_size=8, num_batches=2, seed=3, seconds_per_batch=0.15)}
        found.update(loop.only_evaluate(TinyRanker(), torch.device("cpu"), str(save_dir), num_train_steps=4,
                                        eval_datasets=heldout, eval_metrics_factory=_count_collection,
                                        num_eval_steps=-1, eval_timeout_in_s=30, seconds_to_sleep=0.05))

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread, found


def test_waiting_trainer_gets_every_checkpoint_evaluated_before_pruning_it(tmp_path):
    evaluator, evaluated = _start_evaluator(tmp_path)
    _train(tmp_path, wait_for_evaluators=["heldout"], eval_timeout_in_s=30)
    evaluator.join(timeout=60)
    assert not evaluator.is_alive()
    # Each of the 4 checkpoints was evaluated once, in order, although max_to_keep=1 deleted 1-3.
    # (A trainer that does not wait writes all 4 in well under one evaluation's 0.3 s: the evaluator
    # would see at most the first and the last, or lose the one it reads to the pruning.)
    assert sorted(evaluated) == [1, 2, 3, 4]
    assert all(evaluated[step]["heldout"]["rows"] == 16 for step in evaluated)
    (last,) = get_checkpoints(str(tmp_path))
    assert step_from_checkpoint(last) == 4 and is_done_eval(last, "heldout")  # the trainer waited for it too


def test_without_an_evaluator_the_trainer_waits_once_then_goes_on(tmp_path, warnings_seen):
    start = time.monotonic()
    result = _train(tmp_path, wait_for_evaluators=["heldout"], eval_timeout_in_s=0.5)
    assert result.final_step == 4
    assert time.monotonic() - start < 0.5 * 3  # one timeout, not one per checkpoint
    gave_up = [m for m in warnings_seen if "no evaluator marked" in m]
    assert len(gave_up) == 1 and "training.eval_timeout_in_s=0.5" in gave_up[0]
    assert [step_from_checkpoint(c) for c in get_checkpoints(str(tmp_path))] == [4]


def test_which_sets_a_trainer_waits_for(warnings_seen):
    assert evaluator_sets(False, "train", ["validation"]) == []
    assert evaluator_sets(True, "train", {"validation": 1, "test": 2}) == ["validation", "test"]
    assert evaluator_sets(True, None, ["validation"]) == []  # inline evaluation: nothing to wait for
    assert any("--mode train" in message for message in warnings_seen)
    with pytest.raises(ConfigError, match="wait_for_evaluators needs validation_data"):
        evaluator_sets(True, "train", [])
