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


def gloo_threads_through_teardown(rank: int, world_size: int) -> dict:
    """gloo threads while a sharded model trains, after teardown, and after a teardown that leaves
    a group referenced (which must warn)."""
    from unittest import mock

    from tml.common import device as device_lib
    from tiny_recsys import build_sharded, train_steps

    def train() -> None:  # the model goes out of scope as in a job's main
        model, optimizer = build_sharded("table_wise", seed=0)
        train_steps(model, optimizer, range(1, 3), rank)

    train()
    while_training = device_lib.gloo_threads_alive()
    device_lib.teardown()
    after_teardown = device_lib.gloo_threads_alive()

    device_lib.init_process_group(backend="gloo", store=dist.HashStore(), rank=0, world_size=1)
    held = dist.group.WORLD
    with mock.patch.object(device_lib.logging, "warning") as warning:
        device_lib.teardown()
    while_held = device_lib.gloo_threads_alive()
    del held
    device_lib.teardown()
    return {
        "while_training": while_training,
        "after_teardown": after_teardown,
        "while_held": while_held,
        "warned": [call.args[0] % call.args[1:] for call in warning.call_args_list],
        "after_release": device_lib.gloo_threads_alive(),
    }
