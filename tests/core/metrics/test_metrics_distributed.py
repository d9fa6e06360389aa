"""Every metric computed on 2 ranks, each with its share of the data, equals the single-process value."""
import math

import pytest

from tml.common.testing_utils import run_on_ranks

from rank_fns_metrics import (
    batch,
    build_exact_metrics,
    build_metrics,
    compute_all,
    make_outputs,
    metrics_rank,
    update_all,
    update_exact,
)


@pytest.mark.slow
def test_two_ranks_equal_one_process():
    outputs = make_outputs()
    metrics, generator = build_metrics()
    for index in range(2):
        update_all(metrics, generator, batch(outputs, index), batch_index=index)
    expected = compute_all(metrics)
    exact = build_exact_metrics()
    update_exact(exact, batch(outputs, 0))
    expected_rank0_only = compute_all(exact)

    per_rank = run_on_ranks(metrics_rank, 2, timeout_s=90)

    assert len(expected) == 15 + 2 * 7  # 15 metrics plus 2 tasks x 7 in the collection
    for values, rank0_only in per_rank:
        assert values.keys() == expected.keys()
        for name, value in expected.items():
            assert not math.isnan(value), name
            assert values[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
        assert rank0_only.keys() == expected_rank0_only.keys()
        for name, value in expected_rank0_only.items():
            assert rank0_only[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
