"""The Heavy Ranker's training job: datasets, model, optimizer; train and evaluate.

The command line is `tml.projects.home.recap.main`, which imports this module only after parsing
its arguments. Flow: datasets (train, one per validation set) -> model (large tables on the meta
device, their fused optimizer, sharding) -> per-tower Adam and LR schedules -> train, evaluating
every `training.eval_log_every_n` steps and at the end. Checkpoints and TensorBoard logs go to
`training.save_dir`; a run resumes from its latest checkpoint.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch

from tml.common import device as device_lib
from tml.common.seeding import seed_torch
from tml.common.entry_point import training_session
from tml.common.modules.embedding.pretrained import load_pretrained_tables
from tml.common.modules.linear_kernel import use_linear_kernel
from tml.common.sharding import maybe_shard_model
from tml.core import custom_training_loop as ctl
from tml.core import debug_training_loop
from tml.core.config import ConfigError, load_config_from_yaml
from tml.core.evaluator_wait import evaluator_sets
from tml.core.optimizers import apply_embedding_optimizers
from tml.core.summary import tensorboard_command
from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.config import JobMode, RecapConfig, run_seed
from tml.projects.home.recap.data.dataset import RecapDataset
from tml.projects.home.recap.data.remote import RemoteRecapDataset
from tml.projects.home.recap.data.input_spec import input_spec
from tml.projects.home.recap.metrics import build_metrics_factory, format_results
from tml.projects.home.recap.model.entrypoint import create_ranking_model
from tml.projects.home.recap.model.model_and_loss import build_recap_loss
from tml.projects.home.recap.optimizer import optimizer as recap_optimizer


def check_tasks(config: RecapConfig, source: str = "the config") -> None:
    """Every model task needs a label column in train_data, and each validation set may only
    evaluate model tasks. The config classes leave this to the entry point, as the original's did."""
    model_tasks = list(config.model.tasks)
    data_tasks = list(config.train_data.tasks)
    missing = [task for task in model_tasks if task not in config.train_data.tasks]
    if missing:
        raise ConfigError(
            f"{source}: model.tasks {missing} have no label in train_data.tasks; every model task needs a "
            f"label column of the same name. train_data.tasks: {data_tasks}",
            source,
        )
    for set_name, data_config in config.validation_data.items():
        missing = [task for task in model_tasks if task not in data_config.tasks]
        if missing:
            raise ConfigError(
                f"{source}: validation_data.{set_name}.tasks lacks model tasks {missing}; the model needs "
                f"a label for each of its tasks. validation_data.{set_name}.tasks: {list(data_config.tasks)}",
                source,
            )
        unknown = [task for task in data_config.evaluation_tasks if task not in config.model.tasks]
        if unknown:
            raise ConfigError(
                f"{source}: validation_data.{set_name}.evaluation_tasks {unknown} are not model tasks; "
                f"the model has no tower to score them. model.tasks: {model_tasks}",
                source,
            )


def load_config(config_path: str, overrides: Sequence[str] = ()) -> RecapConfig:
    """A recap config, its tasks checked against its data sections."""
    config = load_config_from_yaml(RecapConfig, config_path, overrides)
    check_tasks(config, config_path)
    return config


def _sparse_table_sizes(config: RecapConfig) -> dict[str, int]:
    """Rows of each large table: its ids are checked against them as the data is read."""
    if config.model.large_embeddings is None:
        return {}
    return {table.name: table.num_embeddings for table in config.model.large_embeddings.tables}


def build_datasets(config: RecapConfig) -> tuple[RecapDataset, dict[str, RecapDataset]]:
    sparse = input_spec(config.train_data, config.model).sparse_feature_names
    sizes = _sparse_table_sizes(config)
    train_data = config.train_data.model_copy(update={"seed": run_seed(config)})
    if train_data.remote_readers:
        train = RemoteRecapDataset(train_data)  # ready batches from reader processes over Arrow Flight
    else:
        train = RecapDataset(
            train_data, mode=JobMode.TRAIN, repeat=True, sparse_feature_names=sparse, sparse_table_sizes=sizes
        )
    # Without repeat each evaluation starts a new pass, so every evaluation reads the same batches.
    validation = {
        name: RecapDataset(
            data_config, mode=JobMode.EVALUATE, repeat=False, sparse_feature_names=sparse, sparse_table_sizes=sizes
        )
        for name, data_config in config.validation_data.items()
    }
    return train, validation


def evaluate_checkpoints(config: RecapConfig, device: torch.device) -> dict[str, dict[str, float]]:
    """The separate evaluator: every validation set on each new checkpoint of training.save_dir."""
    training = config.training
    if not config.validation_data:
        raise ConfigError("--mode evaluate needs validation_data: the sets to evaluate each checkpoint on")
    spec = input_spec(config.train_data, config.model)
    sparse = spec.sparse_feature_names
    validation = {
        name: RecapDataset(data_config, mode=JobMode.EVALUATE, repeat=False, sparse_feature_names=sparse)
        for name, data_config in config.validation_data.items()
    }
    seed_torch(run_seed(config))
    model, _, _ = build_model_and_optimizer(config, spec.feature_shapes, device)  # from the config alone
    logging.info(
        f"evaluator: following checkpoints in {training.save_dir} (sets {list(validation)}; stops after "
        f"step {training.num_train_steps} or {training.eval_timeout_in_s:g} s without a new checkpoint)"
    )
    by_step = ctl.only_evaluate(
        model,
        device,
        training.save_dir,
        training.num_train_steps,
        {name: dataset.to_dataloader() for name, dataset in validation.items()},
        build_metrics_factory(list(config.model.tasks), config.validation_data, config.model.stratifiers),
        training.num_eval_steps,
        training.eval_timeout_in_s,
        config.runtime.enable_amp,
        seconds_to_sleep=ctl.evaluator_poll_seconds(training.eval_timeout_in_s),
    )
    if not by_step:
        logging.info("evaluator: no checkpoint was evaluated")
        return {}
    last = max(by_step)
    logging.info(f"Evaluation of step {last}:\n" + format_results(by_step[last]))
    logging.info(f"TensorBoard: {tensorboard_command(training.save_dir)}")
    return by_step[last]


def build_model_and_optimizer(
    config: RecapConfig, data_spec: Any, device: torch.device
) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    """The (sharded) model-and-loss, its optimizer and LR scheduler."""
    large = config.model.large_embeddings
    model = create_ranking_model(
        data_spec,
        config,
        device,
        loss_fn=build_recap_loss(config.model),
        data_config=config.train_data,
        # Allocated only where the sharding plan places each table.
        embedding_device=torch.device("meta") if large is not None else None,
    )
    use_linear_kernel(model, config.runtime.linear_kernel, device)
    fused_params = apply_embedding_optimizers(model, large.table_optimizers()) if large is not None else None
    model = maybe_shard_model(model, device, fused_params=fused_params)
    if large is not None:
        load_pretrained_tables(model, large.tables)  # tables with `pretrained`; a resumed run overwrites them
    optimizer, scheduler = recap_optimizer.build_optimizer(model, config.optimizer, large)
    return model, optimizer, scheduler


def run(
    config: RecapConfig, device: Optional[torch.device] = None, debug_loop: bool = False, mode: Optional[str] = None
) -> dict[str, dict[str, float]]:
    """Train and evaluate on `device`; returns the last evaluation's metrics per validation set.

    `mode`: None or "train_and_evaluate" (evaluate inline), "train" (no evaluation: a separate
    evaluator follows the checkpoints), "evaluate" (be that evaluator: `evaluate_checkpoints`).

    Without `device`, the job runs inside its own `training_session` (process group, runtime).
    """
    if device is None:
        with training_session(config) as session_device:
            return run(config, session_device, debug_loop, mode)
    if mode == "evaluate":
        return evaluate_checkpoints(config, device)
    training = config.training
    # The trainer of a trainer + evaluator pair waits for the evaluator's marks on these sets.
    awaited_sets = [] if debug_loop else evaluator_sets(training.wait_for_evaluators, mode, config.validation_data or {})
    train_dataset, validation_datasets = build_datasets(config)
    if mode == "train":
        validation_datasets = {}  # a separate evaluator (--mode evaluate) follows the checkpoints
    seed = run_seed(config)
    seed_torch(seed)  # the same initial weights on every rank
    spec = input_spec(config.train_data, config.model)
    model, optimizer, scheduler = build_model_and_optimizer(config, spec.feature_shapes, device)
    seed_torch(seed, device_lib.get_rank() + 1)  # dropout: each rank its own masks
    metrics_factory = build_metrics_factory(list(config.model.tasks), config.validation_data, config.model.stratifiers)
    enable_amp = config.runtime.enable_amp

    if debug_loop:
        logging.info("Debug loop: no checkpoints, no TensorBoard logs.")
        debug_training_loop.train(
            model, optimizer, training.num_train_steps, train_dataset.to_dataloader(), scheduler, device
        )
        plan = ctl.EvaluationPlan(validation_datasets, metrics_factory, training.num_eval_steps)
        results = ctl.run_evaluations(model, plan, device, training.num_train_steps, enable_amp)
    else:
        large = config.model.large_embeddings
        train_arguments: dict[str, Any] = dict(
            model=model,
            optimizer=optimizer,
            device=device,
            **ctl.training_config_arguments(training),
            dataset=train_dataset.to_dataloader(),
            worker_batch_size=train_dataset.batch_size,
            enable_amp=enable_amp,
            scheduler=scheduler,
            tables_to_log=large.tables_to_log if large is not None else None,
            wait_for_evaluators=awaited_sets,
        )
        if validation_datasets:
            result = ctl.train_and_evaluate(
                **train_arguments,
                eval_datasets={name: dataset.to_dataloader() for name, dataset in validation_datasets.items()},
                eval_metrics_factory=metrics_factory,
                num_eval_steps=training.num_eval_steps,
                eval_every_n=training.eval_log_every_n,
            )
        else:
            result = ctl.train(**train_arguments)
        results = result.eval_results

    if results:
        logging.info("Final evaluation:\n" + format_results(results))
    if not debug_loop:
        logging.info(f"Checkpoints: {training.save_dir}")
        logging.info(f"TensorBoard: {tensorboard_command(training.save_dir)}")
    return results
