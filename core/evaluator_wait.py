"""The trainer's side of a trainer + separate evaluator pair (`training.wait_for_evaluators`).

An evaluator (`--mode evaluate`) evaluates the newest checkpoint each time it looks, so without
coordination it skips checkpoints written while it was busy, and `checkpoint_max_to_keep` may
delete the very checkpoint it is reading. When the trainer waits, before writing each checkpoint,
until the evaluator has marked the previous one done (`<checkpoint>/evaled_by/<set>_DONE`, the
original's `wait_for_evaluators`), and for the last one before it exits, then every checkpoint is
evaluated and pruning only ever removes evaluated ones.

Every wait is bounded by `training.eval_timeout_in_s`. After a timeout (no evaluator running, or one
that died) the trainer warns and stops waiting for the rest of the run, so a missing evaluator costs
one timeout, not one per checkpoint.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

from tml.common.checkpointing import CheckpointManager, wait_for_evaluators
from tml.common.device import every_rank
from tml.core.config import ConfigError
from tml.ml_logging.torch_logging import logging


def evaluator_sets(wait: bool, mode: Optional[str], evaluated_sets: Iterable[str]) -> list[str]:
    """The sets a trainer waits for: those the separate evaluator marks, when `wait` applies.

    It applies to `--mode train` only: other modes evaluate inline (or are the evaluator) and no
    one writes markers for them to wait on.
    """
    if not wait:
        return []
    if mode != "train":
        logging.warning(
            "training.wait_for_evaluators is for a trainer run with --mode train beside a separate "
            "evaluator (--mode evaluate); this run does not wait"
        )
        return []
    sets = list(evaluated_sets)
    if not sets:
        raise ConfigError(
            "training.wait_for_evaluators needs validation_data: the evaluator marks each checkpoint "
            "done per validation set, and the trainer waits for those marks"
        )
    return sets


class EvaluatorWait:
    """Waits (on every rank, with one agreement at the end) for evaluators to mark a checkpoint."""

    def __init__(self, sets: Sequence[str], timeout_s: float, poll_s: Optional[float] = None) -> None:
        self.sets = list(sets)
        self.timeout_s = float(timeout_s)
        # Looking for a marker is cheap; a trainer should not idle long after the evaluator is done.
        self.poll_s = poll_s if poll_s is not None else min(2.0, max(0.05, self.timeout_s / 100))
        self.gave_up = False

    @property
    def active(self) -> bool:
        return bool(self.sets) and not self.gave_up

    def for_latest(self, checkpoints: CheckpointManager) -> None:
        """Wait until the newest checkpoint is marked done for every set (all ranks call this)."""
        if not self.active:
            return
        checkpoints.wait()  # an asynchronous save is published first: evaluators see published ones only
        latest = checkpoints.latest()
        if latest is None:
            return
        step = checkpoints.step_of(latest)
        logging.info(f"waiting for the evaluator to finish {latest} (sets {self.sets})")
        done = wait_for_evaluators(checkpoints.save_dir, self.sets, step, self.timeout_s, self.poll_s)
        if not every_rank(done):
            self.gave_up = True
            logging.warning(
                f"no evaluator marked {latest} done within training.eval_timeout_in_s={self.timeout_s:g} s; "
                "the trainer goes on without waiting for evaluators for the rest of this run"
            )
