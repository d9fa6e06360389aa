"""What a user watches: TensorBoard scalars and one console line, written by rank 0 only."""
from __future__ import annotations

import math
import os
import shlex
import sys
from typing import Mapping, Optional, Protocol

from tml.common.device import is_chief
from tml.common.filesystem import infer_fs, is_local_fs
from tml.ml_logging.torch_logging import logging


class ScalarSink(Protocol):
    """Another destination for the scalars (e.g. Weights & Biases, see tml.common.wandb)."""

    def log(self, run_name: str, values: Mapping[str, float], step: int) -> None: ...


# Sinks registered for the duration of a job; every SummaryLogger on rank 0 forwards to them.
_SINKS: list[ScalarSink] = []


def add_scalar_sink(sink: ScalarSink) -> None:
    _SINKS.append(sink)


def remove_scalar_sink(sink: ScalarSink) -> None:
    if sink in _SINKS:
        _SINKS.remove(sink)


def tensorboard_dir(save_dir: str) -> str:
    """TensorBoard files live next to the checkpoints, or locally when save_dir is remote."""
    if is_local_fs(infer_fs(save_dir)):
        return os.path.join(save_dir, "tensorboard")
    local = os.path.join(os.getcwd(), "tb_logs", save_dir.replace("://", "_").replace("/", "_"))
    logging.warning(f"save_dir {save_dir} is remote; TensorBoard logs go to {local}")
    return local


def tensorboard_command(save_dir: str) -> str:
    """The command that shows this run in TensorBoard, runnable as printed: the `tensorboard`
    script of the running interpreter's environment, so no virtual environment has to be active."""
    script = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    if os.access(script, os.X_OK):
        launcher = shlex.quote(script)
    else:
        launcher = f"{shlex.quote(sys.executable)} -m tensorboard.main"
    return f"{launcher} --logdir {shlex.quote(tensorboard_dir(save_dir))}"


def format_scalars(values: Mapping[str, float]) -> str:
    """`name=value` pairs with 4 significant digits; NaN and inf stay visible."""
    parts = []
    for name, value in values.items():
        parts.append(f"{name}={value:.4g}" if math.isfinite(value) else f"{name}={value}")
    return " ".join(parts)


class SummaryLogger:
    """Scalars to TensorBoard under `<log_dir>/<run>` and to every registered sink; a no-op on
    every rank but 0."""

    def __init__(self, log_dir: Optional[str], run: str = "train", purge_step: Optional[int] = None) -> None:
        """`purge_step`: a resumed run's first step; TensorBoard hides the earlier run's events from
        that step on (the steps after its last checkpoint, which this run trains again)."""
        self._writer = None
        self._run = run
        if log_dir is not None and is_chief():
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=os.path.join(log_dir, run), purge_step=purge_step)

    def log(self, values: Mapping[str, float], step: int) -> None:
        if self._writer is None:
            return
        for name, value in values.items():
            self._writer.add_scalar(name, float(value), global_step=step)
        self._writer.flush()
        for sink in _SINKS:
            sink.log(self._run, values, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
