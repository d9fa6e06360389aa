"""Module-level functions for spawned ranks (spawn needs importable targets)."""
import torch
import torch.distributed as dist


def all_reduce_rank(rank: int, world_size: int, offset: int) -> float:
    value = torch.tensor([float(rank + offset)])
    dist.all_reduce(value)
    return value.item()


def fail_on_rank_one(rank: int, world_size: int) -> None:
    if rank == 1:
        raise ValueError("rank one refuses")
    dist.barrier()


def sleep_forever(rank: int, world_size: int) -> None:
    import time

    time.sleep(3600)


def abort_at_exit_on_rank_zero(rank: int, world_size: int) -> int:
    """Finishes, then rank 0 aborts in interpreter teardown, as torch once did in CI."""
    import atexit
    import os

    if rank == 0:
        atexit.register(os.abort)
    return rank


def abort_on_rank_one(rank: int, world_size: int) -> None:
    """Rank 1 dies mid-function; rank 0 waits for it in a collective that never completes."""
    import os

    import torch
    import torch.distributed as dist

    if rank == 1:
        os.abort()
    dist.all_reduce(torch.ones(1))
