"""A trained Heavy Ranker as one plain (unsharded) module, for scoring and export.

Training saves the model-and-loss wrapper, sharded over any number of ranks; DCP checkpoints load
into an unsharded module of the same structure in a single process without a process group.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from tml.common.checkpointing import get_checkpoint, load_model_weights
from tml.common.checkpointing.layout import is_complete
from tml.common.filesystem import infer_fs
from tml.projects.home.recap.config import RecapConfig
from tml.projects.home.recap.model.entrypoint import MultiTaskRankingModel, create_ranking_model
from tml.projects.home.recap.model.model_and_loss import build_recap_loss


def resolve_checkpoint(path: str) -> str:
    """`path` itself when it is a complete checkpoint, else the newest checkpoint in it (a save_dir)."""
    if not infer_fs(path).exists(path):
        raise FileNotFoundError(f"checkpoint path {path} does not exist")
    if is_complete(path):
        return path
    try:
        return get_checkpoint(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} is neither a complete checkpoint nor a save_dir holding one (a checkpoint is a "
            f"<save_dir>/<step>/ folder with a .complete marker)"
        ) from None


def sparse_feature_names(config: RecapConfig) -> list[str]:
    """Large tables read the sparse feature of their own name."""
    large = config.model.large_embeddings
    return [] if large is None else [table.name for table in large.tables]


def build_model(config: RecapConfig, input_shapes: Mapping[str, Sequence[int]]) -> MultiTaskRankingModel:
    """The untrained ranking model on CPU, calibrated with train_data's rates as in training."""
    model_and_loss = create_ranking_model(
        input_shapes, config, torch.device("cpu"), loss_fn=build_recap_loss(config.model), data_config=config.train_data
    )
    return model_and_loss.model


def load_trained_model(
    config: RecapConfig, checkpoint: str, input_shapes: Mapping[str, Sequence[int]]
) -> MultiTaskRankingModel:
    """The model of `checkpoint` (a checkpoint folder, or a save_dir: its newest) in eval mode."""
    path = resolve_checkpoint(checkpoint)
    model_and_loss = create_ranking_model(
        input_shapes, config, torch.device("cpu"), loss_fn=build_recap_loss(config.model), data_config=config.train_data
    )
    # Checkpoints hold the model-and-loss wrapper's state (keys "model.<...>"): load into the same shape.
    load_model_weights(model_and_loss, path)
    model = model_and_loss.model
    model.eval()
    return model
