"""Process-group and device set-up that works the same under `torchrun` and plain `python`."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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
        dist.init_process_group(backend=backend)
    else:
        dist.init_process_group(backend="gloo", store=dist.HashStore(), rank=0, world_size=1)
    return device


def teardown() -> None:
    """Destroy the default process group if one exists (idempotent)."""
    if dist.is_initialized():
        dist.destroy_process_group()


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
