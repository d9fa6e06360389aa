"""`CheckpointManager`: crash-safe checkpoints of a training run, named by completed steps."""
from __future__ import annotations

import dataclasses
from concurrent.futures import Future
from typing import Any, Callable, Mapping, MutableMapping, Optional

import errno
import torch.distributed as dist
from torch.distributed.checkpoint.api import CheckpointException

from tml.common.checkpointing import layout
from tml.common.checkpointing.checkpoint_io import restore, save_state, save_state_async
from tml.common.device import get_rank, get_world_size
from tml.common.filesystem import infer_fs
from tml.core.errors import TmlError
from tml.ml_logging.torch_logging import logging


class CheckpointWriteError(TmlError, OSError):
    """Writing a checkpoint failed (full disk, file size limit, lost storage); nothing was published."""


def _root_cause(error: BaseException) -> BaseException:
    """DCP wraps each rank's failure (with a traceback per rank) in a CheckpointException."""
    if isinstance(error, CheckpointException) and error.failures:
        return error.failures[min(error.failures)][0]
    return error


def _write_failure(error: BaseException, directory: str, step: int) -> CheckpointWriteError:
    cause = _root_cause(error)
    reason = (str(cause).strip().splitlines() or [""])[0]
    code = getattr(cause, "errno", None)
    if code == errno.ENOSPC:
        hint = "the disk is full"
    elif code == errno.EFBIG or "unexpected pos" in reason:
        hint = "a file size limit (ulimit -f) or a full disk cut a file short"
    else:
        hint = type(cause).__name__
    return CheckpointWriteError(
        f"writing the checkpoint of step {step} to {directory} failed ({hint}): {reason}\n"
        f"Earlier checkpoints are untouched; the incomplete {directory} is removed when the next run starts."
    )


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _barrier() -> None:
    if _is_distributed():
        dist.barrier()


def _on_chief(action: Callable[[], None], what: str) -> None:
    """Run `action` on rank 0; if it fails, every rank raises (instead of the others waiting)."""
    error: Optional[Exception] = None
    failure: Optional[str] = None
    if get_rank() == 0:
        try:
            action()
        except Exception as raised:  # noqa: BLE001 - re-raised below, on every rank
            if not _is_distributed():
                raise
            error, failure = raised, f"{type(raised).__name__}: {raised}"
    if _is_distributed():
        message = [failure]
        dist.broadcast_object_list(message, src=0)
        failure = message[0]
    if failure is not None:
        raise RuntimeError(f"{what} failed on rank 0: {failure}") from error


@dataclasses.dataclass
class _PendingSave:
    step: int
    temporary: str
    final: str
    written: "Future[Any]"


class CheckpointManager:
    """Saves and restores checkpoints under `save_dir`, keeping the newest `max_to_keep` (all if None).

    A save writes to `<save_dir>/.tmp-<step>` on all ranks; once every rank is done, rank 0 renames it
    to `<save_dir>/<step>` and then writes the completion marker. Only marked directories count as
    checkpoints, so a crash at any point never leaves a broken "latest" (even where a rename is not
    atomic, as on object stores). Pruning deletes only complete checkpoints older than the kept ones;
    temporary and unmarked directories are never deleted (they may be another save in progress).

    With `async_save` (the original's asynchronous snapshots), `save` returns once the state is
    copied to host memory; the files are written in a background thread, and the checkpoint is
    published (renamed and marked) by the next `save`, `restore` or `wait`: call `wait()` when
    training ends. A crash before that leaves the previous checkpoint as the latest.
    """

    def __init__(self, save_dir: str, max_to_keep: Optional[int] = None, async_save: bool = False) -> None:
        """All ranks construct it (with `async_save` and several ranks it creates a process group)."""
        if max_to_keep is not None and max_to_keep < 1:
            raise ValueError(f"max_to_keep must be at least 1 (or None to keep all), got {max_to_keep}")
        self.save_dir = save_dir
        self.max_to_keep = max_to_keep
        self.async_save = async_save
        self._pending: Optional[_PendingSave] = None
        # The writer thread's collectives get a group of their own: on the default group they could
        # interleave with the training step's (sharded lookups, gradient all-reduce) and deadlock.
        self._writer_group = dist.new_group(backend="gloo") if async_save and _is_distributed() else None

    def path_for(self, step: int) -> str:
        return layout.checkpoint_path(self.save_dir, step)

    def checkpoints(self) -> list[str]:
        """Complete checkpoints, oldest first."""
        return layout.get_checkpoints(self.save_dir)

    def latest(self) -> Optional[str]:
        return layout.get_checkpoint(self.save_dir, missing_ok=True)

    @staticmethod
    def step_of(checkpoint: str) -> int:
        return layout.step_from_checkpoint(checkpoint)

    def save(self, step: int, state: Mapping[str, Any]) -> str:
        """Write `state` as the checkpoint of `step` (completed training steps); all ranks call this.

        Values of `state` are objects with state_dict()/load_state_dict() (model, optimizer, LR
        scheduler, GradScaler, TrainState) or plain picklable values. Returns the checkpoint path
        (with `async_save`, the path it gets when published). An existing checkpoint of the same
        step is replaced.
        """
        if step < 0:
            raise ValueError(f"checkpoint step must be >= 0, got {step}")
        self.wait()  # one save in flight at a time, published in order
        fs = infer_fs(self.save_dir)
        temporary = layout.temporary_path(self.save_dir, step)
        final = self.path_for(step)

        def prepare() -> None:
            fs.makedirs(self.save_dir, exist_ok=True)
            if fs.exists(temporary):  # left by an interrupted save of this very step
                fs.rm(temporary, recursive=True)

        _on_chief(prepare, f"preparing {temporary}")
        _barrier()
        if self.async_save:
            written = save_state_async(temporary, state, process_group=self._writer_group)
            self._pending = _PendingSave(step, temporary, final, written)
            logging.info(f"writing checkpoint {final} in the background")
            return final
        try:
            save_state(temporary, state)
        except (Exception, CheckpointException) as error:
            raise _write_failure(error, temporary, step) from None
        self._publish(step, temporary, final)
        return final

    def wait(self) -> Optional[str]:
        """Finish and publish the save in flight, if any (all ranks call this); its path, else None."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        try:
            pending.written.result()  # a failed write raises here, and nothing is published
        except (Exception, CheckpointException) as error:
            raise _write_failure(error, pending.temporary, pending.step) from None
        self._publish(pending.step, pending.temporary, pending.final)
        return pending.final

    def _publish(self, step: int, temporary: str, final: str) -> None:
        fs = infer_fs(self.save_dir)

        def publish() -> None:
            if fs.exists(final):
                layout.delete_checkpoint(final)
            fs.mv(temporary, final, recursive=True)
            layout.write_complete_marker(final, step, get_world_size())
            self._prune()

        _barrier()
        _on_chief(publish, f"publishing checkpoint {final}")
        logging.info(f"saved checkpoint {final}")

    def _prune(self) -> None:
        if self.max_to_keep is None:
            return
        complete = layout.list_checkpoints(self.save_dir, warn=False)
        for _, path in complete[: max(0, len(complete) - self.max_to_keep)]:
            layout.delete_checkpoint(path)
            logging.info(f"deleted old checkpoint {path} (max_to_keep={self.max_to_keep})")

    def restore(self, checkpoint: str, state: MutableMapping[str, Any]) -> None:
        """Load `checkpoint` into `state` in place (see `checkpoint_io.restore`)."""
        self.wait()
        restore(checkpoint, state)
        logging.info(f"restored {sorted(state)} from {checkpoint}")
