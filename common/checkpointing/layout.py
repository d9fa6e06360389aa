"""Where checkpoints live in a save directory, and which of them are complete.

    <save_dir>/<step>/            a checkpoint after `step` completed training steps (DCP files)
    <save_dir>/<step>/.complete   written last: only a directory with it is a checkpoint
    <save_dir>/.tmp-<step>/       a save in progress (or one that was interrupted)
    <save_dir>/<step>/evaled_by/<partition>_DONE   evaluators' progress markers

Incomplete directories are skipped with a warning and never deleted here: they may belong to a save
still in progress, and what is in them may be worth a look after a crash.
"""
from __future__ import annotations

import json
import time
from typing import Iterator, Optional, Sequence

from tml.common.filesystem import infer_fs
from tml.ml_logging.torch_logging import logging

COMPLETE_MARKER = ".complete"
DCP_METADATA = ".metadata"  # DCP's table of contents, written last by every save
TMP_PREFIX = ".tmp-"
EVALED_BY_DIR = "evaled_by"


def join(base: str, *names: str) -> str:
    """`base/name/...`, keeping `base`'s spelling (local path or URL)."""
    return "/".join([base.rstrip("/"), *names])


def basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def checkpoint_path(save_dir: str, step: int) -> str:
    return join(save_dir, str(step))


def temporary_path(save_dir: str, step: int) -> str:
    return join(save_dir, f"{TMP_PREFIX}{step}")


def is_complete(path: str) -> bool:
    """Whether `path` is a usable checkpoint: marked complete and holding DCP's table of contents."""
    return _why_not_a_checkpoint(path) is None


def write_complete_marker(path: str, step: int, world_size: int) -> None:
    content = {"step": step, "world_size": world_size, "saved_at": time.time()}
    with infer_fs(path).open(join(path, COMPLETE_MARKER), "w") as marker:
        json.dump(content, marker)


def delete_checkpoint(path: str) -> None:
    """Remove the marker first, so a deletion cut short leaves an incomplete (skipped) directory."""
    fs = infer_fs(path)
    marker = join(path, COMPLETE_MARKER)
    if fs.exists(marker):
        fs.rm(marker)
    fs.rm(path, recursive=True)


def _subdirectory_names(save_dir: str) -> list[str]:
    fs = infer_fs(save_dir)
    if not fs.exists(save_dir):
        return []
    return [basename(entry["name"]) for entry in fs.ls(save_dir, detail=True) if entry["type"] == "directory"]


def _why_not_a_checkpoint(path: str) -> Optional[str]:
    fs = infer_fs(path)
    if not fs.exists(join(path, COMPLETE_MARKER)):
        return f"it has no {COMPLETE_MARKER} marker, so it is incomplete"
    if not fs.exists(join(path, DCP_METADATA)):
        return f"it is marked complete but has no {DCP_METADATA} file"
    return None


def list_checkpoints(save_dir: str, warn: bool = True) -> list[tuple[int, str]]:
    """(step, path) of the complete checkpoints in `save_dir`, oldest first."""
    found = []
    for name in _subdirectory_names(save_dir):
        path = join(save_dir, name)
        if name.startswith(TMP_PREFIX):
            problem: Optional[str] = "a checkpoint save in progress or interrupted"
        elif name.isdigit():
            problem = _why_not_a_checkpoint(path)
            if problem is None:
                found.append((int(name), path))
        else:
            continue  # not ours (TensorBoard logs, ...)
        if problem is not None and warn:
            logging.warning(f"ignoring {path}: {problem} (not deleted)")
    return sorted(found)


def get_checkpoints(save_dir: str) -> list[str]:
    """Paths of the complete checkpoints in `save_dir`, sorted by step (oldest first)."""
    return [path for _, path in list_checkpoints(save_dir)]


def resolve_checkpoint(path: str) -> str:
    """`path` itself when it is a checkpoint (complete, or any DCP checkpoint), else the newest
    complete checkpoint in it (a save_dir): what scoring, export and embedding extraction load."""
    if not infer_fs(path).exists(path):
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    if is_complete(path) or infer_fs(path).exists(join(path, DCP_METADATA)):
        return path  # named explicitly: a DCP checkpoint written without our marker is taken as it is
    latest = get_checkpoint(path, missing_ok=True)
    if latest is None:
        raise FileNotFoundError(
            f"{path} is neither a complete checkpoint nor a save_dir holding one (a checkpoint is a "
            f"<save_dir>/<step>/ folder with a {COMPLETE_MARKER} marker)"
        )
    return latest


def step_from_checkpoint(checkpoint: str) -> int:
    """The number of completed training steps a checkpoint holds (its directory name)."""
    name = basename(checkpoint)
    if not name.isdigit():
        raise ValueError(f"{checkpoint} is not a checkpoint directory: its name should be a step number")
    return int(name)


def get_checkpoint(
    save_dir: str, global_step: Optional[int] = None, missing_ok: bool = False
) -> Optional[str]:
    """The newest complete checkpoint, or the one of `global_step`; None if absent and `missing_ok`."""
    checkpoints = list_checkpoints(save_dir)
    if global_step is None:
        if checkpoints:
            return checkpoints[-1][1]
        if missing_ok:
            return None
        raise FileNotFoundError(f"no complete checkpoint in {save_dir}")
    for step, path in checkpoints:
        if step == global_step:
            return path
    if missing_ok:
        return None
    raise FileNotFoundError(
        f"no complete checkpoint of step {global_step} in {save_dir}; "
        f"complete ones: {[step for step, _ in checkpoints]}"
    )


def checkpoints_iterator(
    save_dir: str, seconds_to_sleep: float = 30, timeout: float = 1800
) -> Iterator[str]:
    """Yield the newest complete checkpoint each time a newer one appears (skipping any saved in
    between); stop when none newer appears within `timeout` seconds."""
    last_step = -1
    while True:
        deadline = time.monotonic() + timeout
        while True:
            checkpoints = list_checkpoints(save_dir)
            if checkpoints and checkpoints[-1][0] > last_step:
                break
            if time.monotonic() + seconds_to_sleep > deadline:
                return
            time.sleep(seconds_to_sleep)
        last_step, path = checkpoints[-1]
        yield path


def _eval_marker(checkpoint: str, partition: str) -> str:
    return join(checkpoint, EVALED_BY_DIR, f"{partition}_DONE")


def is_done_eval(checkpoint: str, partition: str) -> bool:
    return infer_fs(checkpoint).exists(_eval_marker(checkpoint, partition))


def mark_done_eval(checkpoint: str, partition: str) -> None:
    fs = infer_fs(checkpoint)
    fs.makedirs(join(checkpoint, EVALED_BY_DIR), exist_ok=True)
    fs.touch(_eval_marker(checkpoint, partition))


def wait_for_evaluators(
    save_dir: str,
    partition_names: Sequence[str],
    global_step: int,
    timeout: float,
    seconds_to_sleep: float = 30,
) -> bool:
    """Wait until every partition has marked the checkpoint of `global_step` evaluated.

    Returns True when all have, False (with a warning naming the missing ones) after `timeout` s.
    """
    checkpoint = checkpoint_path(save_dir, global_step)
    deadline = time.monotonic() + timeout
    while True:
        pending = [name for name in partition_names if not is_done_eval(checkpoint, name)]
        if not pending:
            return True
        if time.monotonic() + seconds_to_sleep > deadline:
            logging.warning(f"evaluators {pending} did not finish {checkpoint} within {timeout} s")
            return False
        time.sleep(seconds_to_sleep)
