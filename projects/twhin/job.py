"""TwHIN's training job: edges, model, optimizer; train and evaluate.

The command line is `tml.projects.twhin.run`, which imports this module only after parsing its
arguments. Flow: this rank's share of the train and validation edges -> model (one table per node
type on the meta device, each with its fused optimizer; sharded by torchrec's planner) ->
relation-vector optimizer and LR schedules -> train, evaluating every `training.eval_log_every_n`
steps and at the end: the sampled AUC over the validation batches and filtered link prediction
(MRR, Hits@k) over all validation edges.

Unlike the original, no environment variables and no separate reader processes are needed: every
rank reads its own part of the Parquet edges.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional

import torch
import torch.nn.functional as F

from tml.common import device as device_lib
from tml.common.entry_point import training_session
from tml.common.modules.embedding.pretrained import load_pretrained_tables
from tml.common.sharding import maybe_shard_model
from tml.core import custom_training_loop as ctl
from tml.core.config import ConfigError
from tml.core.evaluator_wait import evaluator_sets
from tml.core.optimizers import apply_embedding_optimizers
from tml.core.summary import format_scalars, tensorboard_command
from tml.ml_logging.torch_logging import logging
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.data import create_dataset
from tml.projects.twhin.data.edges import EdgesDataset
from tml.projects.twhin.data.remote import RemoteEdgesDataset
from tml.projects.twhin.metrics import LinkPredictionEvaluator, create_metrics
from tml.projects.twhin.models.models import TwhinModel, TwhinModelAndLoss
from tml.projects.twhin.optimizer import build_optimizer

# Name of the evaluation set: its TensorBoard run is `eval_validation`.
VALIDATION = "validation"


def build_model_and_optimizer(config: TwhinConfig, device: torch.device) -> tuple[torch.nn.Module, Any, Any]:
    """The sharded model-and-loss, its combined optimizer and the LR scheduler driving every group."""
    torch.manual_seed(config.train_data.seed)  # the relation vectors' init; tables are built by DMP
    model = TwhinModel(config.model)  # tables on the meta device: each is allocated where it is placed
    fused_params = apply_embedding_optimizers(model, config.model.embeddings.table_optimizers())
    sharded = maybe_shard_model(
        TwhinModelAndLoss(model, F.binary_cross_entropy_with_logits), device, fused_params=fused_params
    )
    load_pretrained_tables(sharded, config.model.embeddings.tables)  # a resumed run overwrites them
    optimizer, scheduler = build_optimizer(sharded, config.model)
    return sharded, optimizer, scheduler


def link_prediction_hook(config: TwhinConfig) -> Optional[ctl.ExtraEvaluation]:
    """Filtered ranking of the validation edges, as an extra evaluation of the training loop."""
    settings = config.link_prediction
    if config.validation_data is None or not settings.enabled:
        return None
    evaluator = LinkPredictionEvaluator(config)
    prefix = "filtered" if settings.filtered else "unfiltered"

    def evaluate(model: torch.nn.Module, step: int) -> dict[str, float]:
        del step
        return {f"{prefix}/{name}": value for name, value in evaluator.evaluate(model).items()}

    return evaluate


def evaluate_checkpoints(config: TwhinConfig, device: torch.device) -> dict[str, dict[str, float]]:
    """The separate evaluator: validation AUC and link prediction on each new checkpoint."""
    training = config.training
    if config.validation_data is None:
        raise ConfigError("--mode evaluate needs validation_data: the edges to evaluate each checkpoint on")
    model, _, _ = build_model_and_optimizer(config, device)
    hook = link_prediction_hook(config)
    logging.info(f"evaluator: following checkpoints in {training.save_dir} (stops after step "
                 f"{training.num_train_steps} or {training.eval_timeout_in_s:g} s without a new checkpoint)")
    by_step = ctl.only_evaluate(
        model,
        device,
        training.save_dir,
        training.num_train_steps,
        {VALIDATION: create_dataset(config.validation_data, config.model)},
        lambda _name: create_metrics(device),
        training.num_eval_steps,
        training.eval_timeout_in_s,
        config.runtime.enable_amp,
        seconds_to_sleep=ctl.evaluator_poll_seconds(training.eval_timeout_in_s),
        extra_evaluations={VALIDATION: hook} if hook is not None else None,
    )
    if not by_step:
        return {}
    last = max(by_step)
    for name, values in by_step[last].items():
        logging.info(f"evaluation of step {last}, {name}: {format_scalars(values)}")
    return by_step[last]


def _training_batches(config: TwhinConfig) -> tuple[Iterable[Any], int]:
    """(this rank's training batches, edges per batch): from the edge files, or from remote readers."""
    data = config.train_data
    if data.remote_readers:
        remote = RemoteEdgesDataset(data, config.model)
        logging.info(f"training batches of {remote.batch_size} edges from remote readers {remote.addresses}; "
                     "training.num_epochs does not apply (the readers repeat their edges)")
        return remote.dataloader(), remote.batch_size
    dataset: EdgesDataset = create_dataset(data, config.model)
    logging.info(
        f"{dataset.num_edges} training edges, {len(dataset)} batches of "
        f"{dataset.batch_size} per rank and epoch, {device_lib.get_world_size()} rank(s)"
    )
    return dataset.dataloader(num_epochs=config.training.num_epochs), dataset.batch_size


def run(
    config: TwhinConfig, device: Optional[torch.device] = None, mode: Optional[str] = None
) -> dict[str, dict[str, float]]:
    """Train and evaluate on `device`; returns the last evaluation's metrics (empty without
    validation_data). Without `device`, the job runs inside its own `training_session`.

    `mode`: None or "train_and_evaluate" (evaluate inline), "train" (no evaluation: a separate
    evaluator follows the checkpoints), "evaluate" (be that evaluator: `evaluate_checkpoints`)."""
    if device is None:
        with training_session(config) as session_device:
            return run(config, session_device, mode)
    if mode == "evaluate":
        return evaluate_checkpoints(config, device)
    training = config.training
    # The trainer of a trainer + evaluator pair waits for the evaluator's mark on the validation set.
    awaited_sets = evaluator_sets(training.wait_for_evaluators, mode, [VALIDATION] if config.validation_data else [])
    train_batches, batch_size = _training_batches(config)
    model, optimizer, scheduler = build_model_and_optimizer(config, device)
    train_arguments: dict[str, Any] = dict(
        model=model,
        optimizer=optimizer,
        device=device,
        **ctl.training_config_arguments(training),
        dataset=train_batches,
        worker_batch_size=batch_size,
        enable_amp=config.runtime.enable_amp,
        scheduler=scheduler,
        tables_to_log=config.model.embeddings.tables_to_log,
        wait_for_evaluators=awaited_sets,
    )
    if config.validation_data is None or mode == "train":
        ctl.train(**train_arguments)
        return {}
    validation = create_dataset(config.validation_data, config.model)
    hook = link_prediction_hook(config)
    result = ctl.train_and_evaluate(
        **train_arguments,
        eval_datasets={VALIDATION: validation},
        eval_metrics_factory=lambda _name: create_metrics(device),
        num_eval_steps=training.num_eval_steps,
        eval_every_n=training.eval_log_every_n,
        extra_evaluations={VALIDATION: hook} if hook is not None else None,
    )
    for name, values in result.eval_results.items():
        logging.info(f"final evaluation, {name}: {format_scalars(values)}")
    logging.info(f"Checkpoints: {training.save_dir}")
    logging.info(f"TensorBoard: {tensorboard_command(training.save_dir)}")
    return result.eval_results
