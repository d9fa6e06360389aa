import torch

from tml.common.checkpointing import get_checkpoint, load_model_weights
from tml.common.testing_utils import run_on_ranks
from tml.core.custom_training_loop import evaluate

from loop_model import StreamDataset, TinyRanker, make_batch
from rank_fns_loop import HELDOUT, auroc_collection, train_sharded


def test_two_rank_train_and_evaluate_checkpoint_loads_into_one_process(tmp_path):
    results = run_on_ranks(train_sharded, 2, str(tmp_path), timeout_s=180)
    (eval_0, probabilities_0, _), (eval_1, probabilities_1, _) = results
    assert eval_0 == eval_1  # metrics are reduced across ranks
    torch.testing.assert_close(probabilities_0, probabilities_1)

    plain = TinyRanker()
    load_model_weights(plain, get_checkpoint(str(tmp_path)))
    plain.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(make_batch(77_777, 16))[1]["probabilities"], probabilities_0)
    single = evaluate(plain, StreamDataset(**HELDOUT), auroc_collection(), torch.device("cpu"), num_eval_steps=-1)
    assert abs(single["auroc"] - eval_0["heldout"]["auroc"]) < 1e-6


def test_batchnorm_statistics_are_averaged_across_ranks_before_a_checkpoint(tmp_path):
    from rank_fns_loop import batchnorm_buffers_after_training

    (mean_0, var_0, _), (mean_1, var_1, _) = run_on_ranks(batchnorm_buffers_after_training, 2, str(tmp_path),
                                                          timeout_s=180)
    torch.testing.assert_close(mean_0, mean_1, rtol=0, atol=0)
    torch.testing.assert_close(var_0, var_1, rtol=0, atol=0)
    assert mean_0.abs().sum() > 0  # they did move away from their initial zeros
