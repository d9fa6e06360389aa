"""Rank functions for the recap scoring tests (spawned by run_on_ranks)."""
from __future__ import annotations

import numpy as np
import torch

from recap_scoring_fixtures import load_setup_config


def train_then_predict(rank: int, world_size: int, config_path: str, candidates: str) -> np.ndarray:
    """Train the sharded model as the entry point does (writing its final checkpoint), then return
    the trained model's calibrated probabilities for every candidate, in file order."""
    from tml.common.sharding import quiet_torchrec_warnings
    from tml.core import custom_training_loop as ctl
    from tml.projects.home.recap import job
    from tml.projects.home.recap.candidates import CandidateReader
    from tml.projects.home.recap.model.model_and_loss import MODEL_INPUTS
    from tml.projects.home.recap.data.input_spec import input_spec
    from tml.projects.home.recap.trained_model import recap_input_spec

    quiet_torchrec_warnings()
    torch.manual_seed(rank)
    config = load_setup_config(config_path)
    device = torch.device("cpu")
    train, _ = job.build_datasets(config)
    model, optimizer, scheduler = job.build_model_and_optimizer(config, input_spec(config.train_data, config.model).feature_shapes, device)
    training = config.training
    ctl.train(
        model=model,
        optimizer=optimizer,
        device=device,
        save_dir=training.save_dir,
        logging_interval=training.train_log_every_n,
        train_steps=training.num_train_steps,
        checkpoint_frequency=training.checkpoint_every_n,
        dataset=train.to_dataloader(),
        worker_batch_size=train.batch_size,
        scheduler=scheduler,
    )
    model.eval()
    reader = CandidateReader(config.train_data, candidates, sparse_feature_names=recap_input_spec(config).sparse_feature_names, batch_rows=16)
    ranking_model = model.module.model  # the sharded tables stay collective: every rank runs the same rows
    parts = []
    with torch.no_grad():
        for _, batch in reader:
            outputs = ranking_model(**{name: getattr(batch, name) for name in MODEL_INPUTS})
            parts.append(outputs["calibrated_probabilities"].numpy())
    return np.concatenate(parts)
