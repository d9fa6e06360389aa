"""Train the Heavy Ranker and evaluate it on every validation set.

    python -m tml.projects.home.recap.main --config_path FILE [--debug_loop] [--set key=value ...]
    torchrun --standalone --nproc_per_node N -m tml.projects.home.recap.main --config_path FILE ...

Flow: config -> process group and device -> datasets (train, one per validation set) -> model
(large tables on the meta device, their fused optimizer, sharding) -> per-tower Adam and LR
schedules -> train, evaluating every `training.eval_log_every_n` steps and at the end. Checkpoints
and TensorBoard logs go to `training.save_dir`; a run resumes from its latest checkpoint.

`${TML_BASE}` in config files defaults to this checkout (see tml.core.config), so the repository's
configs work from any working directory.
"""
from __future__ import annotations

import argparse
from typing import Any, Optional, Sequence

import torch

from tml.common import device as device_lib
from tml.common.entry_point import run_entry_point
from tml.common.seeding import seed_torch
from tml.common.wandb import wandb_logging
from tml.common.modules.embedding.pretrained import load_pretrained_tables
from tml.common.sharding import maybe_shard_model, quiet_torchrec_warnings
from tml.core import custom_training_loop as ctl
from tml.core import debug_training_loop
from tml.core.config import ConfigError, add_config_arguments, load_config_from_args
from tml.core.precision import warn_if_bf16_is_slow
from tml.core.summary import tensorboard_dir
from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.config import JobMode, RecapConfig, run_seed
from tml.projects.home.recap.data.dataset import RecapDataset
from tml.projects.home.recap.metrics import build_metrics_factory, format_results
from tml.projects.home.recap.model.entrypoint import create_ranking_model
from tml.projects.home.recap.model.model_and_loss import build_recap_loss
from tml.projects.home.recap.optimizer import optimizer as recap_optimizer



def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train and evaluate the Heavy Ranker.")
    add_config_arguments(parser)
    parser.add_argument(
        "--debug_loop",
        action="store_true",
        help="Train with the plain debug loop (no pipeline, no checkpoints), then evaluate once.",
    )
    return parser.parse_args(argv)


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


def load_config(args: argparse.Namespace) -> RecapConfig:
    config = load_config_from_args(RecapConfig, args)
    check_tasks(config, args.config_path)
    return config


def _sparse_feature_names(config: RecapConfig) -> Optional[list[str]]:
    """Large tables read the sparse feature of their own name."""
    if config.model.large_embeddings is None:
        return None
    return [table.name for table in config.model.large_embeddings.tables]


def build_datasets(config: RecapConfig) -> tuple[RecapDataset, dict[str, RecapDataset]]:
    sparse = _sparse_feature_names(config)
    train_data = config.train_data.model_copy(update={"seed": run_seed(config)})
    train = RecapDataset(train_data, mode=JobMode.TRAIN, repeat=True, sparse_feature_names=sparse)
    # Without repeat each evaluation starts a new pass, so every evaluation reads the same batches.
    validation = {
        name: RecapDataset(data_config, mode=JobMode.EVALUATE, repeat=False, sparse_feature_names=sparse)
        for name, data_config in config.validation_data.items()
    }
    return train, validation


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
    if large is not None:
        recap_optimizer.apply_embedding_optimizer(model, large.optimizer)
    model = maybe_shard_model(model, device)
    if large is not None:
        load_pretrained_tables(model, large.tables)  # tables with `pretrained`; a resumed run overwrites them
    optimizer, scheduler = recap_optimizer.build_optimizer(
        model, config.optimizer, large.optimizer if large is not None else None
    )
    return model, optimizer, scheduler


def _configure_runtime(config: RecapConfig, device: torch.device) -> None:
    runtime = config.runtime
    if runtime.enable_tensorfloat32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    warn_if_bf16_is_slow(device, runtime.enable_amp)


def run(config: RecapConfig, debug_loop: bool = False) -> dict[str, dict[str, float]]:
    """Train and evaluate; returns the last evaluation's metrics per validation set."""
    device = device_lib.setup_and_get_device()
    _configure_runtime(config, device)
    training = config.training
    train_dataset, validation_datasets = build_datasets(config)
    seed = run_seed(config)
    seed_torch(seed)  # the same initial weights on every rank
    model, optimizer, scheduler = build_model_and_optimizer(config, train_dataset.torch_element_spec, device)
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
        logging.info(f"TensorBoard logs: {tensorboard_dir(training.save_dir)}  "
                     f"(view with: tensorboard --logdir {tensorboard_dir(training.save_dir)})")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    quiet_torchrec_warnings()
    args = parse_args(argv)
    config = load_config(args)
    try:
        with wandb_logging(config.runtime.wandb, config, config.training.save_dir):
            run(config, debug_loop=args.debug_loop)
    finally:
        device_lib.teardown()
    return 0


if __name__ == "__main__":
    run_entry_point(main)
