import time

import pytest
import torch.distributed as dist

from tml.common.testing_utils import run_on_ranks, single_process_group

from rank_functions import (
    abort_at_exit_on_rank_zero,
    abort_on_rank_one,
    all_reduce_rank,
    fail_on_rank_one,
    sleep_forever,
)


def test_single_process_group_is_world_size_one_and_cleaned_up():
    with single_process_group():
        assert dist.get_world_size() == 1 and dist.get_rank() == 0
    assert not dist.is_initialized()


def test_run_on_ranks_returns_each_rank_result():
    assert run_on_ranks(all_reduce_rank, 2, 10, timeout_s=60) == [21.0, 21.0]


def test_run_on_ranks_reports_the_failing_rank():
    with pytest.raises(RuntimeError, match=r"^run_on_ranks: rank 1 of fail_on_rank_one failed:\n(.|\n)*rank one refuses"):
        run_on_ranks(fail_on_rank_one, 2, timeout_s=60)


def test_run_on_ranks_enforces_the_time_limit():
    with pytest.raises(TimeoutError, match="did not finish within 3 s"):
        run_on_ranks(sleep_forever, 2, timeout_s=3)


def test_a_rank_that_dies_after_recording_its_result_is_a_warning_not_a_failure():
    with pytest.warns(RuntimeWarning, match="rank 0 of abort_at_exit_on_rank_zero recorded its result, then ended with SIGABRT"):
        assert run_on_ranks(abort_at_exit_on_rank_zero, 2, timeout_s=60) == [0, 1]


def test_a_rank_that_dies_mid_function_fails_the_call_without_waiting_for_the_time_limit():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank 1 of abort_on_rank_one exited without a result \(SIGABRT\)"):
        run_on_ranks(abort_on_rank_one, 2, timeout_s=60)
    assert time.monotonic() - start < 45
