import torch
from recap_model_builders import INPUT_SHAPES, TASKS, all_inputs_config, full_batch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from tml.projects.home.recap.data.batch import RecapBatch
from tml.projects.home.recap.model.entrypoint import MultiTaskRankingModel
from tml.projects.home.recap.model.model_and_loss import RecapModelAndLoss, build_recap_loss
from tml.projects.home.recap.optimizer.config import RecapOptimizerConfig
from tml.core.optimizers import apply_embedding_optimizers
from tml.projects.home.recap.optimizer.optimizer import build_optimizer


def recap_batch(seed: int) -> RecapBatch:
    fields = full_batch(batch_size=16, seed=seed)
    fields["labels"][:, 0] = (fields["continuous_features"][:, 0] > 0).long()
    fields["labels"][:, 1] = fields["binary_features"][:, 2]
    return RecapBatch(
        continuous_features=fields["continuous_features"],
        binary_features=fields["binary_features"],
        discrete_features=fields["discrete_features"],
        sparse_features=fields["sparse_features"],
        labels=fields["labels"][:, [1, 0]],
        user_embedding=fields["user_embedding"],
        label_names=tuple(reversed(TASKS)),
    )


def test_sharded_model_trains_in_torchrec_sparse_dist_pipeline(process_group):
    """The pipeline traces the forward with torch.fx to start the embedding lookups early: the model
    must be traceable and take `batch.sparse_features` straight to the sharded tables."""
    from tml.common.sharding import maybe_shard_model, quiet_torchrec_warnings

    quiet_torchrec_warnings()
    torch.manual_seed(0)
    config = all_inputs_config("mask_net_parallel", "share_partial")
    model = MultiTaskRankingModel(INPUT_SHAPES, config, embedding_device=torch.device("meta"))
    apply_embedding_optimizers(model, config.large_embeddings.table_optimizers())
    sharded = maybe_shard_model(RecapModelAndLoss(model, build_recap_loss(config)), torch.device("cpu"))
    optimizer_config = RecapOptimizerConfig.model_validate(
        {"adam": {}, "single_task_learning_rate": {"constant": 0.01}}
    )
    optimizer, scheduler = build_optimizer(sharded, optimizer_config, config.large_embeddings)
    pipeline = TrainPipelineSparseDist(sharded, optimizer, torch.device("cpu"))

    batches = iter([recap_batch(seed % 4) for seed in range(40)])
    losses = []
    while True:
        try:
            outputs = pipeline.progress(batches)
        except StopIteration:
            break
        scheduler.step()
        losses.append(outputs["loss"].item())
        assert outputs["labels"].shape == (16, 2)
    assert len(losses) == 40
    assert sum(losses[-4:]) < 0.7 * sum(losses[:4])


def test_two_rank_table_wise_sharding_computes_the_unsharded_function(tmp_path):
    """A sharded collection returns features in a plan-dependent order; the model takes them by name."""
    from rank_fns_recap_model import sharded_outputs_match_unsharded

    from tml.common.testing_utils import run_on_ranks

    differences = run_on_ranks(
        sharded_outputs_match_unsharded, 2, str(tmp_path / "checkpoint"), timeout_s=120
    )
    assert max(differences) < 1e-5
