"""A checkpoint saved by 2 ranks (table_wise) loads under other plans, world sizes, and unsharded."""
import pytest
import torch

from tml.common.checkpointing import load_model_weights
from tml.common.testing_utils import run_on_ranks

from rank_fns_checkpointing import (
    EVAL_SEEDS,
    SAVE_AT,
    async_save_while_training,
    restore_and_continue,
    restore_into_bigger_tables,
    save_then_continue,
)
from tiny_recsys import TinyRecsys, eval_outputs, model_checksums

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    save_dir = str(tmp_path_factory.mktemp("checkpoints"))
    return run_on_ranks(save_then_continue, 2, save_dir, timeout_s=120)


def _assert_same_state(restored, reference):
    for got, expected in zip(restored["outputs"], reference["outputs"]):
        torch.testing.assert_close(got, expected)
    assert restored["model_sums"] == pytest.approx(reference["model_sums"], rel=1e-6)
    assert restored["optimizer_sums"] == pytest.approx(reference["optimizer_sums"], rel=1e-6)
    assert restored["step"] == SAVE_AT and restored["walltime"] == 12.5
    assert restored["scale"] == 1024.0 and restored["note"] == "hello"


def test_saved_checkpoint_is_named_by_completed_steps(saved):
    assert saved[0]["path"].endswith(f"/{SAVE_AT}")
    # The fused Adagrad momentum and the dense Adam moments are all in the checkpoint.
    keys = saved[0]["optimizer_sums"]
    assert sum(".momentum1" in key for key in keys) == 4
    assert sum(key.endswith(".exp_avg_sq") for key in keys) == 4


def test_two_ranks_row_wise_restore_everything_and_train_on_identically(saved):
    restored = run_on_ranks(restore_and_continue, 2, saved[0]["path"], "row_wise", timeout_s=120)
    for rank in range(2):
        _assert_same_state(restored[rank], saved[rank])
        assert restored[rank]["saved_world_size"] == 2
        assert restored[rank]["later_losses"] == pytest.approx(saved[rank]["later_losses"], rel=1e-5)
        torch.testing.assert_close(restored[rank]["random_after_restore"], saved[rank]["random_after_save"])
    assert not torch.equal(saved[0]["random_after_save"], saved[1]["random_after_save"])


def test_one_process_restores_everything(saved):
    (restored,) = run_on_ranks(restore_and_continue, 1, saved[0]["path"], "table_wise", timeout_s=120)
    _assert_same_state(restored, saved[0])
    assert restored["saved_world_size"] == 2


def test_plain_unsharded_module_without_process_group_gets_the_weights(saved):
    model = TinyRecsys(device="cpu", seed=99)
    load_model_weights(model, saved[0]["path"])
    for got, expected in zip(eval_outputs(model, EVAL_SEEDS), saved[0]["outputs"]):
        torch.testing.assert_close(got, expected)
    assert model_checksums(model.state_dict()) == pytest.approx(saved[0]["model_sums"], rel=1e-6)


def test_other_table_sizes_fail_clearly_on_every_rank(saved):
    messages = run_on_ranks(restore_into_bigger_tables, 2, saved[0]["path"], timeout_s=120)
    for message in messages:
        assert "tensor 'model.embeddings.ebc.embedding_bags.t0.weight' has shape (16, 8) in the checkpoint but (20, 8) here" in message


def test_two_ranks_save_asynchronously_while_training_on(tmp_path):
    for result in run_on_ranks(async_save_while_training, 2, str(tmp_path), timeout_s=120):
        assert result["published_before_wait"] is None and result["latest"] == result["path"]
        assert result["restored"] == pytest.approx(result["saved"], rel=1e-6)  # the state at the save
        assert result["trained_on"] != pytest.approx(result["saved"], rel=1e-6)
