"""Helpers for tests that need a process group: one in-process rank, or N spawned gloo ranks."""
from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import tempfile
import time
import traceback
import warnings
from typing import Any, Callable, Iterator

import torch.distributed as dist
import torch.multiprocessing as mp


@contextlib.contextmanager
def single_process_group() -> Iterator[None]:
    """A world-size-1 gloo group backed by an in-memory store: no ports, no environment."""
    from tml.common import device

    if dist.is_initialized():
        raise RuntimeError("a default process group already exists; nested groups are not supported")
    device.init_process_group(backend="gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        device.teardown()


# Kept for readers of the original, whose tests used this name.
mock_pg = single_process_group


def _result_path(result_dir: str, rank: int) -> str:
    return os.path.join(result_dir, f"rank{rank}.pt")


def _record(result_dir: str, rank: int, outcome: tuple[str, Any, float]) -> None:
    import torch

    path = _result_path(result_dir, rank)
    torch.save(outcome, path + ".partial")
    os.replace(path + ".partial", path)


def _rank_entry(
    rank: int,
    world_size: int,
    port: int,
    result_dir: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    import torch

    from tml.common import device

    # A rank that aborts in C++ then still shows where each Python thread was.
    faulthandler.enable()
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    try:
        # The parent hosts the store, as torchrun's agent does: no rank owns the server thread.
        store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False)
        device.init_process_group(backend="gloo", store=store, rank=rank, world_size=world_size)
    except BaseException:  # noqa: BLE001 - the parent re-raises it with this rank's traceback
        _record(result_dir, rank, ("error", traceback.format_exc(), time.time()))
        return
    try:
        outcome = ("ok", fn(rank, world_size, *args), time.time())
    except BaseException:  # noqa: BLE001
        outcome = ("error", traceback.format_exc(), time.time())
    # Recorded before the teardown, which then cannot lose it: peers fail only once this rank
    # leaves the group, and a rank that dies after this point is told apart from one that failed.
    _record(result_dir, rank, outcome)
    device.teardown()


def _signal_name(exitcode: int) -> str:
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"exit code {exitcode}"


def run_on_ranks(
    fn: Callable[..., Any], world_size: int, *args: Any, timeout_s: float = 120.0
) -> list[Any]:
    """Run `fn(rank, world_size, *args)` on `world_size` spawned gloo ranks on 127.0.0.1.

    Returns the per-rank return values. `fn` must be importable (module level). A rank that raises,
    dies before `fn` returned, or exceeds `timeout_s` fails the call with that rank's traceback, and
    every rank is killed. A rank that dies after recording its result (in process-group or
    interpreter teardown, as gloo's threads once made ranks abort: see `device.teardown`) does not
    fail the function under test; it is reported as a warning.
    """
    import torch

    with tempfile.TemporaryDirectory(prefix="tml-ranks-") as result_dir:
        def recorded(rank: int) -> bool:
            return os.path.exists(_result_path(result_dir, rank))

        # Port 0: the kernel picks a free one while binding, so no other process can take it first.
        store = dist.TCPStore("127.0.0.1", 0, None, is_master=True, wait_for_workers=False)
        context = mp.start_processes(
            _rank_entry,
            args=(world_size, store.port, result_dir, fn, args),
            nprocs=world_size,
            join=False,
            start_method="spawn",
        )
        processes = context.processes
        deadline = time.monotonic() + timeout_s
        try:
            while any(process.is_alive() for process in processes):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"run_on_ranks: {fn.__name__} did not finish within {timeout_s:.0f} s")
                # A rank gone without a result leaves its peers waiting on it: stop now.
                if any(p.exitcode not in (None, 0) and not recorded(r) for r, p in enumerate(processes)):
                    break
                time.sleep(0.05)
        finally:
            for process in processes:
                if process.is_alive():
                    process.kill()
                process.join()
        results, failures = [], []
        for rank, process in enumerate(processes):
            if not recorded(rank):
                how = "" if process.exitcode in (0, None) else f" ({_signal_name(process.exitcode)})"
                failures.append((float("inf"), f"rank {rank} of {fn.__name__} exited without a result{how}"))
                continue
            status, value, finished_at = torch.load(_result_path(result_dir, rank), weights_only=False)
            if status == "error":
                failures.append((finished_at, f"rank {rank} of {fn.__name__} failed:\n{value}"))
            elif process.exitcode != 0:
                warnings.warn(f"run_on_ranks: rank {rank} of {fn.__name__} recorded its result, then ended "
                              f"with {_signal_name(process.exitcode)} in teardown", RuntimeWarning, stacklevel=2)
            results.append(value)
        if failures:
            # The first rank to fail is the cause; the others usually just lost their peer.
            raise RuntimeError("run_on_ranks: " + "\n".join(message for _, message in sorted(failures)))
        return results
