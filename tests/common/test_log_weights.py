import pytest
import torch

from tml.common.log_weights import log_ebc_norms, weights_to_log
from tml.common.testing_utils import run_on_ranks

from rank_fns_embedding import known_table
from rank_fns_log_weights import norms_of_sharded_tables


def _model():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
        model[0].bias.copy_(torch.tensor([1.0, -2.0]))
        model[1].weight.copy_(torch.tensor([[0.5, 0.5]]))
        model[1].bias.fill_(7.0)
    return model


def test_weights_to_log_applies_one_function_to_every_parameter():
    assert weights_to_log(_model(), torch.norm) == {
        "model/norm/0.weight": 5.0,
        "model/norm/0.bias": pytest.approx(5.0**0.5),
        "model/norm/1.weight": pytest.approx(0.5**0.5),
        "model/norm/1.bias": 7.0,
    }


def test_weights_to_log_with_a_function_per_parameter():
    def mean(tensor):
        return tensor.mean()

    assert weights_to_log(_model(), {"0.bias": torch.sum, "1.weight": mean}) == {
        "model/sum/0.bias": -1.0,
        "model/mean/1.weight": 0.5,
    }
    assert weights_to_log(_model(), None) == {}


def test_weights_to_log_rejects_unknown_names():
    with pytest.raises(KeyError, match=r"no dense parameters named \['2.weight'\]"):
        weights_to_log(_model(), {"2.weight": torch.sum})


def test_log_ebc_norms_of_an_unsharded_table():
    table = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]])
    state = {"ebc.embedding_bags.user.weight": table}
    assert log_ebc_norms(state, ["user"]) == {"user-norm-0": pytest.approx((5 + 1 + 10) / 3)}
    assert log_ebc_norms(state, ["ebc.embedding_bags.user.weight"]) == {
        "ebc.embedding_bags.user.weight-norm-0": pytest.approx(16 / 3)
    }


def test_log_ebc_norms_samples_rows_without_touching_the_global_generator():
    table = torch.tensor([[3.0, 4.0]] * 50 + [[0.0, 5.0]] * 50)  # every row has norm 5
    before = torch.get_rng_state()
    assert log_ebc_norms({"t.weight": table}, ["t.weight"], sample_size=7) == {"t.weight-norm-0": pytest.approx(5.0)}
    assert torch.equal(before, torch.get_rng_state())


def test_log_ebc_norms_names_unknown_tables():
    with pytest.raises(KeyError, match=r"'item' is neither a state-dict key nor the name of one table"):
        log_ebc_norms({"ebc.embedding_bags.user.weight": torch.ones(2, 2)}, ["item"])


def _mean_row_norm(rows: torch.Tensor) -> float:
    return rows.norm(dim=1).mean().item()


@pytest.mark.slow
def test_sharded_tables_report_each_ranks_rows():
    results = run_on_ranks(norms_of_sharded_tables, 2, timeout_s=120)
    t0, t1 = known_table(0), known_table(1)
    # Row-wise: rank 0 holds rows 0-7, rank 1 rows 8-15. Table-wise: one rank holds all of t1.
    expected_t0 = {"t0-norm-0": pytest.approx(_mean_row_norm(t0[:8])), "t0-norm-1": pytest.approx(_mean_row_norm(t0[8:]))}
    t1_key = "embeddings.ebc.embedding_bags.t1.weight"
    for result in results:
        norms = result["norms"]
        assert {key: value for key, value in norms.items() if key.startswith("t0")} == expected_t0
        (t1_entry,) = [key for key in norms if key.startswith(t1_key)]
        assert norms[t1_entry] == pytest.approx(_mean_row_norm(t1))
        assert result["rng_untouched"]
        # Dense parameters only, under their model names; table pieces are left to log_ebc_norms.
        assert sorted(result["weights"]) == [f"model/sum/mlp.{i}.{p}" for i in (0, 2) for p in ("bias", "weight")]
        assert result["bias"] == {"model/sum/mlp.2.bias": pytest.approx(result["expected_bias"])}
    assert results[0]["norms"] == results[1]["norms"]
