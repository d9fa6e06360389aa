"""Ranks of the whole-set evaluation test: each evaluates its share of the files, padding included."""
from __future__ import annotations

from typing import Any

import torch

from tml.core.custom_training_loop import evaluate
from tml.projects.home.recap.data.dataset import RecapDataset
from tml.projects.home.recap.metrics import build_metrics_factory
from tml.projects.home.recap.model.entrypoint import MultiTaskRankingModel
from tml.projects.home.recap.model.model_and_loss import RecapModelAndLoss, build_recap_loss


def fixed_model(data_config: Any, element_spec: Any) -> RecapModelAndLoss:
    """The same untrained model on every rank and in the parent (seeded), in eval mode."""
    from tml.projects.home.recap.model.config import ModelConfig

    config = ModelConfig.model_validate({
        "tasks": {task: {"mlp_config": {"layer_sizes": [3, 1]}} for task in data_config.tasks},
        "featurization_config": {"log1p_abs_config": {}},
    })
    torch.manual_seed(0)
    model = MultiTaskRankingModel(element_spec, config, data_config)
    return RecapModelAndLoss(model, build_recap_loss(config), label_names=list(data_config.tasks)).eval()


def evaluate_whole_set(rank: int, world_size: int, data_config: Any) -> dict[str, float]:
    dataset = RecapDataset(data_config, mode="evaluate", repeat=False)
    model = fixed_model(data_config, dataset.torch_element_spec)
    metrics = build_metrics_factory(list(data_config.tasks), {"set": data_config})("set")
    return evaluate(model, dataset, metrics, torch.device("cpu"), num_eval_steps=-1)
