"""A small Heavy Ranker (MaskNet backbone, two towers) and random batches whose labels follow the
features, for tests that compare how well two training paths learn (AUROC)."""
from __future__ import annotations

import dataclasses
from typing import Iterable

import torch
from recap_model_builders import ARCHITECTURE_BACKBONES, INPUT_SHAPES, TASKS, model_config
from torchmetrics.classification import BinaryAUROC

from tml.common.batch import DataclassBatch
from tml.projects.home.recap.model.entrypoint import MultiTaskRankingModel
from tml.projects.home.recap.model.model_and_loss import RecapModelAndLoss, build_recap_loss
from tml.projects.home.recap.optimizer.config import RecapOptimizerConfig

HELD_OUT_SEEDS = range(1000, 1004)


@dataclasses.dataclass
class SmallBatch(DataclassBatch):
    continuous_features: torch.Tensor
    binary_features: torch.Tensor
    discrete_features: torch.Tensor
    user_embedding: torch.Tensor
    labels: torch.Tensor


def optimizer_config() -> RecapOptimizerConfig:
    ramp = {"linear_ramp_to_constant": {"learning_rate": 0.02, "num_ramp_steps": 10}}
    return RecapOptimizerConfig.model_validate(
        {
            "adam": {"beta_1": 0.95, "beta_2": 0.999, "epsilon": 1e-7},
            "multi_task_learning_rates": {
                "tower_learning_rates": {TASKS[0]: ramp, TASKS[1]: {"constant": 0.01}},
                "backbone_learning_rate": ramp,
            },
        }
    )


def small_model(seed: int = 0) -> RecapModelAndLoss:
    torch.manual_seed(seed)
    config = model_config(
        backbone=ARCHITECTURE_BACKBONES["mask_net_parallel"],
        multi_task_type="share_all",
        featurization_config={"double_norm_log_config": {"batch_norm_config": {}, "layer_norm_config": {}}},
    )
    return RecapModelAndLoss(MultiTaskRankingModel(INPUT_SHAPES, config), build_recap_loss(config))


def learnable_batch(seed: int, batch_size: int = 64) -> SmallBatch:
    """Task 0 follows the first continuous feature, task 1 the second (with noise)."""
    generator = torch.Generator().manual_seed(seed)
    continuous = torch.randn(batch_size, INPUT_SHAPES["continuous"][1], generator=generator)
    noise = torch.rand(batch_size, 2, generator=generator)
    labels = torch.stack(
        [continuous[:, 0] + 0.5 * noise[:, 0] > 0.25, continuous[:, 1] - 0.5 * noise[:, 1] < -0.25], dim=1
    ).long()
    return SmallBatch(
        continuous_features=continuous * 10,
        binary_features=torch.randint(0, 2, (batch_size, INPUT_SHAPES["binary"][1]), generator=generator),
        discrete_features=torch.zeros(batch_size, INPUT_SHAPES["discrete"][1], dtype=torch.long),
        user_embedding=torch.randn(batch_size, INPUT_SHAPES["user_embedding"][1], generator=generator),
        labels=labels,
    )


def held_out() -> list[SmallBatch]:
    return [learnable_batch(seed) for seed in HELD_OUT_SEEDS]


def auroc(model: torch.nn.Module, batches: Iterable[SmallBatch], task: int) -> float:
    model.eval()
    metric = BinaryAUROC()
    with torch.no_grad():
        for batch in batches:
            _, outputs = model(batch)
            metric.update(outputs["probabilities"][:, task].float(), outputs["labels"][:, task].long())
    return float(metric.compute())
