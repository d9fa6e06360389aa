"""Rank functions for tests/common/test_device.py (spawned ranks import them by name)."""
from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist


def describe_existing_group(rank: int, world_size: int) -> dict:
    """setup_and_get_device inside an already running group: reuses it, changes nothing."""
    from tml.common import device as device_lib

    group_before = dist.group.WORLD
    device = device_lib.setup_and_get_device()
    return {
        "device": str(device),
        "rank": device_lib.get_rank(),
        "world_size": device_lib.get_world_size(),
        "same_group": dist.group.WORLD is group_before,
        "is_chief": device_lib.is_chief(),
    }


def reinitialise_from_torchrun_environment(rank: int, world_size: int) -> dict:
    """Tear the spawner's group down, then let setup_and_get_device build one from the env alone."""
    from tml.common import device as device_lib

    # A fresh rendezvous port, agreed through the old group before it goes away.
    port = [None]
    if rank == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port[0] = sock.getsockname()[1]
    dist.broadcast_object_list(port, src=0)
    device_lib.teardown()
    assert not dist.is_initialized()
    os.environ["MASTER_PORT"] = str(port[0])

    launched = device_lib.is_launched_by_torchrun()
    device = device_lib.setup_and_get_device()
    again = device_lib.setup_and_get_device()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)
    # The group is left up: the spawner destroys it.
    return {
        "launched_by_torchrun": launched,
        "device": str(device),
        "again": str(again),
        "rank": device_lib.get_rank(),
        "world_size": device_lib.get_world_size(),
        "backend": dist.get_backend(),
        "sum_of_ranks_plus_one": total.item(),
    }
