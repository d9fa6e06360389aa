"""Rank functions for the distributed training-loop test."""
import torch
import torchmetrics

from loop_model import StreamDataset, build_trainable, make_batch
from tml.common.sharding import TableShardingConfig
from tml.core.custom_training_loop import train_and_evaluate
from tml.core.metrics import AUROCWithMWU
from tml.core.metrics.mixins import MetricMixin


class LoopAUROC(MetricMixin, AUROCWithMWU):
    def transform(self, outputs):
        return {"predictions": outputs["probabilities"][:, 0], "target": outputs["labels"][:, 0]}


def auroc_collection(_name: str = "") -> torchmetrics.MetricCollection:
    return torchmetrics.MetricCollection({"auroc": LoopAUROC()})


HELDOUT = dict(batch_size=32, num_batches=5, seed=5)


def train_sharded(rank: int, world_size: int, save_dir: str):
    sharding = {name: TableShardingConfig(sharding_type="table_wise") for name in ("t_user", "t_item")}
    model, optimizer = build_trainable(sharding=sharding)
    result = train_and_evaluate(
        model, optimizer, torch.device("cpu"), save_dir, logging_interval=10, train_steps=20,
        checkpoint_frequency=10, dataset=StreamDataset(batch_size=16, rank=rank, world_size=world_size),
        worker_batch_size=16,
        eval_datasets={"heldout": StreamDataset(rank=rank, world_size=world_size, **HELDOUT)},
        eval_metrics_factory=auroc_collection, num_eval_steps=-1,
    )
    model.eval()
    with torch.no_grad():
        probabilities = model(make_batch(77_777, 16))[1]["probabilities"]
    placement = sorted(model.plan.plan["ebc"].keys()) if hasattr(model, "plan") else None
    return result.eval_results, probabilities, placement


def batchnorm_buffers_after_training(rank: int, world_size: int, save_dir: str):
    """Each rank sees different data, so its BatchNorm statistics differ until the loop averages them."""
    from tml.core.custom_training_loop import train

    model, optimizer = build_trainable(batch_norm=True)
    train(model, optimizer, torch.device("cpu"), save_dir, logging_interval=5, train_steps=5,
          checkpoint_frequency=5, dataset=StreamDataset(batch_size=16, rank=rank, world_size=world_size, seed=rank),
          worker_batch_size=16)
    norm = model.module.mlp[0] if hasattr(model, "module") else model.mlp[0]
    fused_state = {k: v for k, v in optimizer.state_dict()["state"].items() if "t_" in k}
    return norm.running_mean.clone(), norm.running_var.clone(), sorted(fused_state)
