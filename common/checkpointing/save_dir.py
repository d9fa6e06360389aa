"""Which save directories tml owns, one run per save directory, and what tml may delete in one.

    <save_dir>/.tml-save-dir   marker: tml made this directory (written when it was new or empty)
    <save_dir>/.tml-lock       the run using it: host, pid, start time (held by rank 0)

tml deletes only inside a directory with its marker, and only what it writes there: step
directories, `.tmp-*` saves, `tensorboard/` and its own two files. `--overwrite_save_dir` on a
directory holding anything else is refused with the list of what it would have deleted.

The lock is a file created exclusively (`O_EXCL`) on local disks. fsspec's object stores have no
exclusive create: there the lock is written, read back after a short pause and kept only if it is
still ours, so two runs started at the same instant may both proceed; runs started a few seconds
apart are refused as on a local disk. A lock left by a killed run is taken over (with a warning)
when its process is gone on this host; a lock from another host is never taken over: the message
names it so that it can be deleted by hand once that run is known to be dead.
"""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

import torch.distributed as dist

from tml.common.checkpointing import layout
from tml.common.device import get_rank
from tml.common.filesystem import infer_fs, is_local_fs, strip_protocol
from tml.core.errors import TmlError
from tml.ml_logging.torch_logging import logging

MARKER = ".tml-save-dir"
LOCK = ".tml-lock"
TENSORBOARD = "tensorboard"
OBJECT_STORE_SETTLE_S = 2.0


class SaveDirError(TmlError):
    """The save directory cannot be used or cleared safely."""


class SaveDirLockedError(SaveDirError):
    """Another run holds the save directory's lock."""


def _is_owned_entry(name: str, is_dir: bool) -> bool:
    if is_dir:
        return name.isdigit() or name.startswith(layout.TMP_PREFIX) or name == TENSORBOARD
    return name in (MARKER, LOCK)


def _entries(save_dir: str) -> list[tuple[str, bool]]:
    fs = infer_fs(save_dir)
    return [(layout.basename(entry["name"]), entry["type"] == "directory") for entry in fs.ls(save_dir, detail=True)]


def foreign_entries(save_dir: str) -> list[str]:
    """Entries of `save_dir` that tml does not write there."""
    return sorted(name + ("/" if is_dir else "") for name, is_dir in _entries(save_dir) if not _is_owned_entry(name, is_dir))


def is_owned(save_dir: str) -> bool:
    fs = infer_fs(save_dir)
    return fs.isdir(save_dir) and fs.exists(layout.join(save_dir, MARKER))


def _protected_local_paths() -> list[tuple[Path, str]]:
    checkout = Path(__file__).resolve().parents[2]  # the repository root is the package `tml`
    protected = [(Path("/"), "the file system root"), (checkout, "the tml checkout")]
    home = os.environ.get("HOME")
    if home:
        protected.append((Path(home).resolve(), "the home directory ($HOME)"))
    return protected


def check_deletable_location(save_dir: str) -> None:
    """Refuse the file system root, $HOME, the checkout and any ancestor of the working directory."""
    fs = infer_fs(save_dir)
    if not is_local_fs(fs):
        if not strip_protocol(save_dir).strip("/").partition("/")[2]:
            raise SaveDirError(f"refusing to delete {save_dir}: it is a whole bucket or file system root")
        return
    target = Path(strip_protocol(save_dir)).resolve()
    for path, what in _protected_local_paths():
        if target == path:
            raise SaveDirError(f"refusing to delete {save_dir}: it is {what}")
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
        raise SaveDirError(f"refusing to delete {save_dir}: the working directory {cwd} is inside it")
    checkout = Path(__file__).resolve().parents[2]
    if target in checkout.parents:
        raise SaveDirError(f"refusing to delete {save_dir}: the tml checkout {checkout} is inside it")


def clear_save_dir(save_dir: str) -> list[str]:
    """Delete what earlier runs wrote in `save_dir` (keeping the directory, its marker and lock);
    returns the deleted names. Refused unless tml owns the directory and it holds nothing else."""
    fs = infer_fs(save_dir)
    if not fs.exists(save_dir):
        return []
    if not fs.isdir(save_dir):
        raise SaveDirError(f"save_dir {save_dir} is a file, not a directory; not deleted")
    check_deletable_location(save_dir)
    entries = _entries(save_dir)
    foreign = foreign_entries(save_dir)
    if not entries:
        return []
    listing = ", ".join(sorted(name + ("/" if is_dir else "") for name, is_dir in entries)[:20])
    if not is_owned(save_dir):
        raise SaveDirError(
            f"refusing to clear {save_dir}: it has no {MARKER} marker, so tml did not make it. "
            f"It holds: {listing}{' ...' if len(entries) > 20 else ''}. Delete it yourself or pick another save_dir."
        )
    if foreign:
        raise SaveDirError(
            f"refusing to clear {save_dir}: besides checkpoints and logs it holds {foreign}, which tml did "
            f"not write. It would have deleted: {listing}. Move those away or pick another save_dir."
        )
    deleted = []
    for name, is_dir in entries:
        if name in (MARKER, LOCK):
            continue
        path = layout.join(save_dir, name)
        if is_dir and name.isdigit() and fs.exists(layout.join(path, layout.COMPLETE_MARKER)):
            layout.delete_checkpoint(path)
        else:
            fs.rm(path, recursive=is_dir)
        deleted.append(name)
    return sorted(deleted)


def remove_partial_checkpoints(save_dir: str) -> list[str]:
    """Delete step directories without `.complete` and `.tmp-*` saves left by a killed run; only in
    a directory tml owns, and only while this run holds its lock (no save of another run is live)."""
    if not is_owned(save_dir):
        return []
    fs = infer_fs(save_dir)
    removed = []
    for name, is_dir in _entries(save_dir):
        if not is_dir:
            continue
        path = layout.join(save_dir, name)
        partial = name.startswith(layout.TMP_PREFIX) or (
            name.isdigit() and not fs.exists(layout.join(path, layout.COMPLETE_MARKER))
        )
        if partial:
            fs.rm(path, recursive=True)
            removed.append(path)
    for path in removed:
        logging.warning(f"removed {path}: an incomplete checkpoint left by an interrupted run")
    return removed


def _claim_directory(save_dir: str) -> None:
    """Create `save_dir` if needed and mark it as tml's when it is new, empty or holds only what
    tml writes (a directory of an older tml)."""
    fs = infer_fs(save_dir)
    if fs.exists(save_dir) and not fs.isdir(save_dir):
        raise SaveDirError(f"save_dir {save_dir} is a file, not a directory; choose a directory path")
    fs.makedirs(save_dir, exist_ok=True)
    if not fs.exists(layout.join(save_dir, MARKER)) and not foreign_entries(save_dir):
        with fs.open(layout.join(save_dir, MARKER), "w") as marker:
            json.dump({"created_by": "tml", "created_at": time.time()}, marker)


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SaveDirLock:
    """The lock file of one run on `save_dir` (see the module docstring)."""

    def __init__(self, save_dir: str) -> None:
        self.save_dir = save_dir
        self.path = layout.join(save_dir, LOCK)
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": time.time(), "id": uuid.uuid4().hex}
        self.held = False

    def _read(self) -> Optional[dict]:
        fs = infer_fs(self.path)
        try:
            with fs.open(self.path, "r") as file:
                return json.load(file)
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {}  # unreadable: a lock being written, or garbage; treated as held by someone

    def _create(self) -> bool:
        fs = infer_fs(self.path)
        content = json.dumps(self.owner)
        if is_local_fs(fs):
            try:
                descriptor = os.open(strip_protocol(self.path), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "w") as file:
                file.write(content)
            return True
        if fs.exists(self.path):
            return False
        with fs.open(self.path, "w") as file:
            file.write(content)
        time.sleep(OBJECT_STORE_SETTLE_S)  # a run that wrote at the same time overwrites ours or not
        return (self._read() or {}).get("id") == self.owner["id"]

    def _describe(self, holder: dict) -> str:
        started = holder.get("started_at")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if isinstance(started, (int, float)) else "?"
        return f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {when}"

    def acquire(self) -> None:
        for _ in range(3):
            if self._create():
                self.held = True
                return
            holder = self._read()
            if holder is None:
                continue  # released meanwhile
            same_host = holder.get("host") == self.owner["host"]
            pid = holder.get("pid")
            if same_host and isinstance(pid, int) and pid != os.getpid() and not _process_is_alive(pid):
                logging.warning(
                    f"taking over the lock {self.path} of a run that no longer exists ({self._describe(holder)})"
                )
                infer_fs(self.path).rm(self.path)
                continue
            raise SaveDirLockedError(
                f"save_dir {self.save_dir} is in use by another run ({self._describe(holder)}): two runs would "
                f"overwrite each other's checkpoints. Wait for it, use another save_dir, or, if that run is "
                f"dead, delete {self.path}."
            )
        raise SaveDirLockedError(f"could not take the lock {self.path}: it keeps changing")

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = self._read()
        if holder and holder.get("id") == self.owner["id"]:
            infer_fs(self.path).rm(self.path)


def _on_rank_zero(action: Callable[[], None]) -> None:
    """Run `action` on rank 0 and raise its SaveDirError (or any error) on every rank."""
    failure: Optional[str] = None
    error: Optional[BaseException] = None
    if get_rank() == 0:
        try:
            action()
        except Exception as raised:  # noqa: BLE001 - re-raised below on every rank
            error, failure = raised, str(raised)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        message = [failure]
        dist.broadcast_object_list(message, src=0)
        failure = message[0]
    if error is not None:
        raise error
    if failure is not None:
        raise SaveDirError(f"rank 0: {failure}")


def open_save_dir(save_dir: str, overwrite: bool = False) -> SaveDirLock:
    """Start a run on `save_dir` (all ranks call this): rank 0 takes the lock, marks a new directory
    as tml's, clears it when `overwrite`, and removes incomplete checkpoints. Release the returned
    lock when the run ends."""
    lock = SaveDirLock(save_dir)

    def start() -> None:
        _claim_directory(save_dir)
        lock.acquire()
        try:
            if overwrite:
                deleted = clear_save_dir(save_dir)
                if deleted:
                    logging.info(f"--overwrite_save_dir: deleted {deleted} from {save_dir}")
            remove_partial_checkpoints(save_dir)
        except BaseException:
            lock.release()
            raise

    _on_rank_zero(start)
    return lock
