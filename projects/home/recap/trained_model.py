"""A trained Heavy Ranker as one plain (unsharded) module, for scoring and export.

Training saves the model-and-loss wrapper, sharded over any number of ranks; DCP checkpoints load
into an unsharded module of the same structure in a single process without a process group.
"""
from __future__ import annotations

import torch

from tml.common.checkpointing import load_model_weights, resolve_checkpoint
from tml.projects.home.recap.config import RecapConfig
from tml.projects.home.recap.data.input_spec import RecapInputSpec, input_spec
from tml.projects.home.recap.model.entrypoint import MultiTaskRankingModel, create_ranking_model
from tml.projects.home.recap.model.model_and_loss import RecapModelAndLoss, build_recap_loss


def recap_input_spec(config: RecapConfig) -> RecapInputSpec:
    """What the model of `config` reads: train_data's layout, model.large_embeddings' sparse features."""
    return input_spec(config.train_data, config.model)


def _model_and_loss(config: RecapConfig) -> RecapModelAndLoss:
    spec = recap_input_spec(config)
    return create_ranking_model(
        spec.feature_shapes, config, torch.device("cpu"), loss_fn=build_recap_loss(config.model),
        data_config=config.train_data, label_names=spec.label_names,
    )


def build_model(config: RecapConfig) -> MultiTaskRankingModel:
    """The untrained ranking model on CPU, calibrated with train_data's rates as in training."""
    return _model_and_loss(config).model


def load_trained_model(config: RecapConfig, checkpoint: str) -> MultiTaskRankingModel:
    """The model of `checkpoint` (a checkpoint folder, or a save_dir: its newest) in eval mode."""
    path = resolve_checkpoint(checkpoint)
    model_and_loss = _model_and_loss(config)
    # Checkpoints hold the model-and-loss wrapper's state (keys "model.<...>"): load into the same shape.
    load_model_weights(model_and_loss, path)
    model = model_and_loss.model
    model.eval()
    return model
