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
