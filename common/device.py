"""Process-group and device set-up that works the same under `torchrun` and plain `python`."""
from __future__ import annotations

import gc
import importlib
import os

import torch
import torch.distributed as dist

from tml.ml_logging.torch_logging import logging

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

# torch modules that store `group.WORLD` as a default argument when they are first imported. Imported
# after the group exists (torchrec imports the second while sharding), they hold the group for the
# life of the process and `destroy_process_group` cannot free it.
_MODULES_BINDING_THE_DEFAULT_GROUP = (
    "torch.distributed.nn.functional",
    "torch.distributed.optim.zero_redundancy_optimizer",
)
_GLOO_THREAD_NAMES = ("pt_gloo_runloop", "gloo_tcp_loop")


def is_launched_by_torchrun() -> bool:
    """torchrun (and any launcher following its contract) sets these for every worker."""
    return all(name in os.environ for name in _TORCHRUN_VARIABLES)


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def get_device() -> torch.device:
    """`cuda:LOCAL_RANK` when CUDA is usable, otherwise the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{_local_rank()}")
    return torch.device("cpu")


def setup_and_get_device() -> torch.device:
    """Initialise the default process group (once) and return this worker's device.

    Under torchrun the launcher's environment is used (NCCL on GPUs, gloo on CPU). Without it, a
    world-size-1 gloo group backed by an in-memory store is started, so single-process runs and
    notebooks need no ports or environment variables and still run the same sharded code paths.
    """
    device = get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return device
    if is_launched_by_torchrun():
        backend = "nccl" if device.type == "cuda" else "gloo"
        init_process_group(backend=backend)
    else:
        init_process_group(backend="gloo", store=dist.HashStore(), rank=0, world_size=1)
    return device


def init_process_group(**kwargs) -> None:
    """`dist.init_process_group`, once nothing imported later can keep the group alive (see `teardown`)."""
    for name in _MODULES_BINDING_THE_DEFAULT_GROUP:
        importlib.import_module(name)
    dist.init_process_group(**kwargs)


def teardown() -> None:
    """Destroy the default process group if one exists, and free it now (idempotent).

    Why free it now: a group that outlives `destroy_process_group` (held by a reference cycle, as
    sharded modules make, or by a default argument) keeps gloo's worker threads running into the
    interpreter's shutdown. A worker that then drops a tensor with a Python object must take the
    GIL, Python ends that thread in the middle of a C++ destructor, and the process aborts with
    "terminate called without an active exception" after its work is done. Collecting the cycles
    here destroys the group, which joins those threads while Python is still fully alive.
    """
    if dist.is_initialized():
        dist.destroy_process_group()
    gc.collect()
    left = gloo_threads_alive()
    if left:
        logging.warning(
            "%d gloo thread(s) still run after the process group was destroyed: something still "
            "references the group, and the process may abort at exit", left)


def gloo_threads_alive() -> int:
    """Threads of live gloo process groups in this process (0 where /proc is not available)."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return 0
    count = 0
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as stream:
                count += stream.read().strip() in _GLOO_THREAD_NAMES
        except OSError:  # the thread ended meanwhile
            continue
    return count


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_chief() -> bool:
    return get_rank() == 0


def _agree(flag: bool, op: dist.ReduceOp) -> bool:
    if get_world_size() == 1:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=op)
    return bool(value.item())


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on at least one (one all-reduce; none alone)."""
    return _agree(flag, dist.ReduceOp.MAX)


def every_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on all of them (one all-reduce; none alone)."""
    return _agree(flag, dist.ReduceOp.MIN)
