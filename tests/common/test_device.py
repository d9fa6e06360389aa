import pytest
import torch
import torch.distributed as dist

from tml.common import device as device_lib
from tml.common.testing_utils import run_on_ranks

from rank_fns_device import (
    describe_existing_group,
    gloo_threads_through_teardown,
    reinitialise_from_torchrun_environment,
)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE")


@pytest.fixture
def no_launcher(monkeypatch):
    """A plain `python` process: no torchrun variables, no group; any group made is torn down."""
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not dist.is_initialized()
    yield
    device_lib.teardown()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_without_launcher_a_world_size_one_gloo_group_is_made(no_launcher):
    assert not device_lib.is_launched_by_torchrun()
    assert (device_lib.get_rank(), device_lib.get_world_size()) == (0, 1)  # no group yet
    device = device_lib.setup_and_get_device()
    assert device == torch.device("cpu")
    assert dist.is_initialized() and dist.get_backend() == "gloo"
    assert (device_lib.get_rank(), device_lib.get_world_size(), device_lib.is_chief()) == (0, 1, True)
    value = torch.tensor([3.0])
    dist.all_reduce(value)
    assert value.item() == 3.0


def test_second_call_reuses_the_group(no_launcher):
    first = device_lib.setup_and_get_device()
    group = dist.group.WORLD
    assert device_lib.setup_and_get_device() == first
    assert dist.group.WORLD is group


def test_teardown_is_idempotent_and_allows_a_new_group(no_launcher):
    device_lib.setup_and_get_device()
    device_lib.teardown()
    assert not dist.is_initialized()
    device_lib.teardown()
    assert (device_lib.get_rank(), device_lib.get_world_size()) == (0, 1)
    device_lib.setup_and_get_device()
    assert dist.is_initialized()


def test_partial_launcher_environment_is_not_torchrun(no_launcher, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not device_lib.is_launched_by_torchrun()
    device_lib.setup_and_get_device()  # falls back to the in-memory store, needs no MASTER_* variables
    assert dist.get_world_size() == 1


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="expects CPU ranks (gloo, device cpu)")
def test_inside_an_existing_two_rank_group():
    results = run_on_ranks(describe_existing_group, 2, timeout_s=60)
    for rank, result in enumerate(results):
        assert result == {
            "device": "cpu",
            "rank": rank,
            "world_size": 2,
            "same_group": True,
            "is_chief": rank == 0,
        }


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="expects CPU ranks (gloo, device cpu)")
def test_under_a_torchrun_environment_the_group_comes_from_the_variables():
    results = run_on_ranks(reinitialise_from_torchrun_environment, 2, timeout_s=60)
    for rank, result in enumerate(results):
        assert result == {
            "launched_by_torchrun": True,
            "device": "cpu",
            "again": "cpu",
            "rank": rank,
            "world_size": 2,
            "backend": "gloo",
            "sum_of_ranks_plus_one": 3.0,
        }


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="counts gloo's threads")
def test_teardown_frees_a_sharded_models_group_and_joins_its_gloo_threads():
    """The cause of the rare SIGABRT at exit ("terminate called without an active exception"): a
    group outliving `destroy_process_group` (torchrec's sharding imports a torch module that pins
    it; sharded modules hold it in reference cycles) left gloo's threads running into interpreter
    shutdown, where one releasing a tensor was killed inside a C++ destructor."""
    for result in run_on_ranks(gloo_threads_through_teardown, 2, timeout_s=90):
        assert result["while_training"] >= 2  # at least one worker and the transport loop
        assert result["after_teardown"] == 0
        assert result["while_held"] > 0
        assert len(result["warned"]) == 1 and "still references the group" in result["warned"][0]
        assert result["after_release"] == 0
