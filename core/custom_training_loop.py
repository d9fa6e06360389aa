"""Training and evaluation loops shared by every tml project.

Model contract: `model(batch) -> (loss, outputs)` where `outputs` is a dict (metrics read it).
Steps run through torchrec's train pipelines (see core/train_pipeline.py). A *step* is one
optimizer update; with `gradient_accumulation=k` it consumes k batches. Exactly `train_steps` steps
run in total over any number of interruptions: checkpoints are named by completed steps, and a
resumed run continues with the step after the checkpoint (and the batch after the ones consumed).
"""
from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
import torchmetrics
from tqdm import tqdm

from tml.common.checkpointing import CheckpointManager, TrainState, checkpoints_iterator, mark_done_eval
from tml.common.checkpointing.save_dir import open_save_dir
from tml.common.device import any_rank, get_rank, get_world_size, is_chief
from tml.common.entry_point import TrainingProgress, report_training_progress
from tml.core.errors import TmlError
from tml.core.evaluator_wait import EvaluatorWait
from tml.core.finite_guard import (
    FiniteLossGuard,
    NonFiniteLossError,
    check_finite_state,
    nonfinite_parameters,
    suspicious_learning_rates,
)
from tml.core.losses import get_global_loss_detached
from tml.core.optimizers.optimizer import param_group_names
from tml.core.summary import SummaryLogger, format_scalars, tensorboard_dir
from tml.core.train_pipeline import TrainStepRunner, autocast_context
from tml.ml_logging.torch_logging import logging

MetricsFactory = Callable[[], torchmetrics.MetricCollection]
# (model, step) -> scalars. Called by every rank together (it may use collectives), in eval mode
# and without gradients, after the dataset evaluations.
ExtraEvaluation = Callable[[torch.nn.Module, int], Mapping[str, float]]


@dataclasses.dataclass
class EvaluationPlan:
    """What `train_and_evaluate` evaluates, and how often.

    `extra_evaluations` are for metrics that do not fit a per-batch MetricCollection (e.g. ranking
    against a whole embedding table). Each is logged under its name like a dataset: when the name
    is also a dataset's, its values join that dataset's results, TensorBoard run and console line.
    """

    datasets: Mapping[str, Iterable[Any]]
    metrics_factory: Callable[[str], torchmetrics.MetricCollection]
    num_eval_steps: int = 16384
    eval_every_n: Optional[int] = None  # None: at every checkpoint
    extra_evaluations: Mapping[str, ExtraEvaluation] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TrainResult:
    steps_run: int
    final_step: int
    last_loss: Optional[float]
    eval_results: dict[str, dict[str, float]]


def _to_float_dict(results: Mapping[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for name, value in results.items():
        if isinstance(value, Mapping):
            flat.update({f"{name}/{k}": float(v) for k, v in _to_float_dict(value).items()})
        else:
            flat[name] = float(value.detach().item() if isinstance(value, torch.Tensor) else value)
    return flat


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    dataset: Iterable[Any],
    metrics: torchmetrics.MetricCollection,
    device: torch.device,
    num_eval_steps: int,
    enable_amp: bool = False,
    description: str = "eval",
) -> dict[str, float]:
    """Metrics over `num_eval_steps` batches, or over the whole dataset when it is negative.

    Every rank runs the same number of forwards (sharded embeddings need collective calls): a rank
    whose data ends first repeats its last batch without counting it, until all ranks are done.
    """
    model.eval()
    metrics = metrics.to(device)
    metrics.reset()
    batches = iter(dataset)
    last_batch = None
    steps = 0
    progress = tqdm(
        total=num_eval_steps if num_eval_steps >= 0 else None,
        desc=description,
        disable=not is_chief() or not sys.stderr.isatty(),  # a bar in a log file is noise
        leave=False,
        dynamic_ncols=True,
    )
    while num_eval_steps < 0 or steps < num_eval_steps:
        batch = next(batches, None)
        if not any_rank(batch is not None):
            break
        if batch is None:
            if last_batch is None:
                raise RuntimeError(f"rank {get_rank()} has no data for '{description}' while other ranks do")
            with autocast_context(device, enable_amp):
                model(last_batch)
        else:
            last_batch = batch.to(device)
            with autocast_context(device, enable_amp):
                loss, outputs = model(last_batch)
            metrics.update({**outputs, "loss": loss} if isinstance(outputs, dict) else outputs)
        steps += 1
        progress.update(1)
    progress.close()
    if steps == 0:
        raise ValueError(f"evaluation '{description}' got no batch from its dataset")
    results = _to_float_dict(metrics.compute())
    metrics.reset()
    return results


def _replicated_buffers(module: torch.nn.Module) -> Iterator[torch.Tensor]:
    """Buffers of the data-parallel part: sharded embedding modules hold rank-specific state."""
    from torchrec.distributed.types import ShardedModule

    if isinstance(module, ShardedModule):
        return
    yield from module.buffers(recurse=False)
    for child in module.children():
        yield from _replicated_buffers(child)


def average_buffers_across_ranks(model: torch.nn.Module) -> None:
    """Replace each floating-point buffer (e.g. BatchNorm running statistics) by its mean over ranks.

    Data-parallel training keeps one copy of the dense part per rank, and torchrec's DDP wrapper does
    not broadcast buffers, so running statistics drift apart; a checkpoint would keep just one
    rank's. Averaging before saving and evaluating makes them one well-defined value.
    """
    if get_world_size() == 1:
        return
    buffers = [b for b in _replicated_buffers(model) if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).double() for b in buffers])
    dist.all_reduce(flat)
    flat /= get_world_size()
    offset = 0
    for buffer in buffers:
        count = buffer.numel()
        buffer.copy_(flat[offset : offset + count].view_as(buffer))
        offset += count


class _KeptOpen:
    """A shared logger handed out to a caller that closes what it gets: its close does nothing."""

    def __init__(self, logger: SummaryLogger) -> None:
        self._logger = logger

    def log(self, values: Mapping[str, float], step: int) -> None:
        self._logger.log(values, step)

    def close(self) -> None:
        pass


class RunLoggers:
    """TensorBoard runs (`train`, `eval_<set>`) under the save_dir's log folder, one writer (one
    event file) per run for the whole training. With `purge_step` (a resumed run's first step),
    each writer first hides the earlier run's events from that step on, which are trained again."""

    def __init__(self, save_dir: str, purge_step: Optional[int] = None) -> None:
        self.log_dir = tensorboard_dir(save_dir)
        self.purge_step = purge_step
        self._loggers: dict[str, SummaryLogger] = {}

    def __call__(self, run: str) -> SummaryLogger:
        if run not in self._loggers:
            self._loggers[run] = SummaryLogger(self.log_dir, run, purge_step=self.purge_step)
        return _KeptOpen(self._loggers[run])  # type: ignore[return-value]

    def close(self) -> None:
        for logger in self._loggers.values():
            logger.close()
        self._loggers.clear()


def _skip_batches(iterator: Iterator[Any], count: int) -> Iterator[Any]:
    """Advance past batches a resumed run already trained on (datasets may offer a faster skip)."""
    if count > 0:
        next(itertools.islice(iterator, count, count), None)
    return iterator


def _learning_rates(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """One value per named group (groups sharing a name share a schedule)."""
    rates = {}
    for index, (name, group) in enumerate(zip(param_group_names(optimizer), optimizer.param_groups)):
        rates.setdefault(f"lr/{name or f'group_{index}'}", float(group["lr"]))
    return rates


def _per_task_losses(outputs: list[Any]) -> dict[str, float]:
    sums: dict[str, float] = {}
    for output in outputs:
        if isinstance(output, Mapping):
            for name, value in output.items():
                if name.startswith("loss/") and isinstance(value, torch.Tensor) and value.numel() == 1:
                    sums[name] = sums.get(name, 0.0) + float(value.detach())
    return {name: total / len(outputs) for name, total in sums.items()}


def _mean_loss(outputs: list[Any]) -> torch.Tensor:
    losses = [output["loss"].detach().float() for output in outputs if isinstance(output, Mapping) and "loss" in output]
    if not losses:
        raise ValueError("the model's outputs must be a dict; the loop adds the step's loss to it as 'loss'")
    finite = [loss for loss in losses if bool(torch.isfinite(loss).all())]  # skipped micro-batches aside
    return torch.stack(finite or losses).mean().cpu()


class TrainingDivergedError(TmlError):
    """The loss became NaN/inf: the run stops before anything non-finite is checkpointed."""


def _divergence_message(
    step: int, error: NonFiniteLossError, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    latest_checkpoint: Optional[str], allowed_skips: int,
) -> str:
    causes = list(error.causes) + suspicious_learning_rates(optimizer)
    causes += [f"parameter '{name}' holds NaN/inf" for name in nonfinite_parameters(model)]
    lines = [f"training stopped at step {step}: the loss is not finite ({error})."]
    if causes:
        lines.append("likely cause: " + "; ".join(causes))
    else:
        lines.append(
            "no input, parameter or learning rate is NaN/inf on this rank: the loss overflowed "
            "(learning rate too high, exploding gradients) or another rank's data is bad"
        )
    kept = f"latest checkpoint {latest_checkpoint} is unchanged" if latest_checkpoint else "no checkpoint was written"
    lines.append(
        f"{kept}; training.max_skipped_nonfinite_steps (now {allowed_skips}) lets a run skip such steps."
    )
    return "\n".join(lines)


def training_config_arguments(training: Any) -> dict[str, Any]:
    """The `train` arguments that a `TrainingConfig` (or a project's variant of it) decides."""
    return dict(
        save_dir=training.save_dir,
        logging_interval=training.train_log_every_n,
        train_steps=training.num_train_steps,
        checkpoint_frequency=training.checkpoint_every_n,
        initial_checkpoint_dir=training.initial_checkpoint_dir,
        gradient_accumulation=training.gradient_accumulation,
        checkpoint_max_to_keep=training.checkpoint_max_to_keep,
        async_checkpointing=training.async_checkpointing,
        max_skipped_nonfinite_steps=getattr(training, "max_skipped_nonfinite_steps", 0),
        eval_timeout_in_s=training.eval_timeout_in_s,
    )


def train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    save_dir: str,
    logging_interval: int,
    train_steps: int,
    checkpoint_frequency: int,
    dataset: Iterable[Any],
    worker_batch_size: int,
    enable_amp: bool = False,
    initial_checkpoint_dir: Optional[str] = None,
    gradient_accumulation: Optional[int] = None,
    scheduler: Optional[Any] = None,
    tables_to_log: Optional[list[str]] = None,
    checkpoint_max_to_keep: Optional[int] = None,
    evaluation: Optional[EvaluationPlan] = None,
    async_checkpointing: bool = False,
    max_skipped_nonfinite_steps: int = 0,
    overwrite_save_dir: bool = False,
    wait_for_evaluators: Sequence[str] = (),
    eval_timeout_in_s: float = 3600.0,
) -> TrainResult:
    """Train for exactly `train_steps` optimizer steps, resuming from the newest checkpoint.

    Unlike the original's, it takes no `num_workers` (it only inflated the logged global examples/s),
    `logger_initializer`, `metrics` or `parameters_to_log` (no caller used them). A NaN/inf loss stops the run with
    TrainingDivergedError (naming the step and what is NaN) before its backward, unless
    `max_skipped_nonfinite_steps` allows skipping it; a NaN/inf parameter is never checkpointed.
    Rank 0 holds `save_dir`'s lock for the whole run; `overwrite_save_dir` first deletes what earlier
    runs wrote there, only in a directory tml made (see common.checkpointing.save_dir).
    With `wait_for_evaluators` (the sets a separate evaluator marks), each checkpoint is written only
    once the previous one is marked evaluated, and training ends once the last one is, each wait
    bounded by `eval_timeout_in_s` (see core.evaluator_wait).
    """
    save_dir_lock = open_save_dir(save_dir, overwrite=overwrite_save_dir)
    run_loggers = RunLoggers(save_dir)
    try:
        world_size = get_world_size()
        loss_guard = FiniteLossGuard(max_skipped_nonfinite_steps)
        runner = TrainStepRunner(model, optimizer, device, enable_amp, gradient_accumulation, loss_guard=loss_guard)
        train_state = TrainState()
        state: dict[str, Any] = {"model": model, "optimizer": optimizer, "train_state": train_state}
        if scheduler is not None:
            state["scheduler"] = scheduler
        checkpoints = CheckpointManager(save_dir, max_to_keep=checkpoint_max_to_keep, async_save=async_checkpointing)
        evaluators = EvaluatorWait(wait_for_evaluators, eval_timeout_in_s)

        latest = checkpoints.latest()
        if latest is not None and checkpoints.step_of(latest) >= train_steps:
            return _finished_run(
                latest, checkpoints.step_of(latest), train_steps, checkpoints, state, evaluation, device, enable_amp
            )
        # Before the generators are restored: starting a torch DataLoader draws from the global RNG, and
        # a draw after the restore would shift every later dropout mask against the uninterrupted run.
        batches = iter(dataset)
        if latest is not None:
            logging.info(f"resuming from {latest}")
            checkpoints.restore(latest, state)
        elif initial_checkpoint_dir:
            logging.info(f"warm start from {initial_checkpoint_dir} (step stays 0)")
            checkpoints.restore(initial_checkpoint_dir, {"model": model, "optimizer": optimizer})
        start_step = train_state.step
        runner.start_at(start_step)
        batches = _skip_batches(batches, start_step * runner.accumulation_steps)
        run_loggers.purge_step = start_step + 1 if start_step else None
        make_logger = run_loggers
        train_logger = make_logger("train")

        eval_results: dict[str, dict[str, float]] = {}
        last_loss: Optional[float] = None
        report_training_progress(lambda: TrainingProgress(train_state.step, train_steps, checkpoints.latest()))
        window_start, window_steps = time.perf_counter(), 0
        for step in range(start_step + 1, train_steps + 1):
            step_start = time.perf_counter()
            try:
                outputs = runner.step(batches)
            except StopIteration:
                logging.warning(f"the training data ended after {step - 1} steps (asked for {train_steps})")
                break
            except NonFiniteLossError as error:
                checkpoints.wait()  # a save in flight holds the state of a finite step: publish it
                train_logger.close()
                message = _divergence_message(
                    step, error, model, optimizer, checkpoints.latest(), max_skipped_nonfinite_steps
                )
                raise TrainingDivergedError(message) from None
            if loss_guard.skipped_in_step:
                logging.warning(
                    f"step {step}: non-finite loss, step skipped ({loss_guard.skipped} of "
                    f"{max_skipped_nonfinite_steps} allowed)"
                )
            if scheduler is not None:
                scheduler.step()
            train_state.step = step
            train_state.walltime += time.perf_counter() - step_start
            window_steps += 1

            if step % logging_interval == 0 or step == train_steps:
                loss = get_global_loss_detached(_mean_loss(outputs)).item()
                last_loss = loss
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                examples_per_s = window_steps * runner.accumulation_steps * worker_batch_size / elapsed
                values = {
                    "loss": loss,
                    **_per_task_losses(outputs),
                    **_learning_rates(optimizer),
                    "steps_per_s": window_steps / elapsed,
                    "worker_examples_per_s": examples_per_s,
                    "global_examples_per_s": examples_per_s * world_size,
                    "active_training_walltime": train_state.walltime,
                }
                if tables_to_log:
                    values.update(_weights_to_log(model, tables_to_log))
                train_logger.log(values, step)
                logging.info(f"step {step}/{train_steps} {format_scalars(values)}")
                window_start, window_steps = time.perf_counter(), 0

            is_checkpoint_step = step % checkpoint_frequency == 0 or step == train_steps
            is_eval_step = evaluation is not None and _is_eval_step(step, train_steps, checkpoint_frequency, evaluation)
            if is_checkpoint_step or is_eval_step:
                average_buffers_across_ranks(model)
            if is_checkpoint_step:
                check_finite_state(model, step)
                evaluators.for_latest(checkpoints)
                checkpoints.save(step, state)
            if is_eval_step:
                runner.detach()
                eval_results = run_evaluations(model, evaluation, device, step, enable_amp, make_logger)
        if train_state.step > start_step and train_state.step % checkpoint_frequency != 0 and train_state.step != train_steps:
            average_buffers_across_ranks(model)
            check_finite_state(model, train_state.step)
            evaluators.for_latest(checkpoints)
            checkpoints.save(train_state.step, state)  # the data ended early: keep what was trained
        checkpoints.wait()  # the last checkpoint is published before train returns
        evaluators.for_latest(checkpoints)
        runner.detach()  # callers may call the model directly again
        train_logger.close()
        return TrainResult(train_state.step - start_step, train_state.step, last_loss, eval_results)
    finally:
        run_loggers.close()
        save_dir_lock.release()


def _finished_run(
    latest: str,
    latest_step: int,
    train_steps: int,
    checkpoints: CheckpointManager,
    state: dict[str, Any],
    evaluation: Optional[EvaluationPlan],
    device: torch.device,
    enable_amp: bool,
) -> TrainResult:
    """A rerun of a finished run: say so and evaluate its last checkpoint again (not logged to
    TensorBoard a second time), so the rerun shows the run's metrics instead of nothing."""
    logging.info(
        f"this run is finished: {latest} has {latest_step} of {train_steps} steps "
        "(raise training.num_train_steps to train on, or add --overwrite_save_dir to start over)"
    )
    if evaluation is None:
        return TrainResult(0, latest_step, None, {})
    logging.info(f"evaluating {latest}")
    checkpoints.restore(latest, state)
    eval_results = run_evaluations(state["model"], evaluation, device, latest_step, enable_amp)
    return TrainResult(0, latest_step, None, eval_results)


def _is_eval_step(step: int, train_steps: int, checkpoint_frequency: int, plan: EvaluationPlan) -> bool:
    every = plan.eval_every_n or checkpoint_frequency
    return step % every == 0 or step == train_steps


def _weights_to_log(model: torch.nn.Module, tables_to_log: list[str]) -> dict[str, float]:
    """Mean row norms of the named embedding tables."""
    from tml.common.log_weights import log_ebc_norms

    return {k: float(v) for k, v in log_ebc_norms(model.state_dict(), tables_to_log).items()}


def run_evaluations(
    model: torch.nn.Module,
    plan: EvaluationPlan,
    device: torch.device,
    step: int,
    enable_amp: bool = False,
    make_logger: Optional[Callable[[str], SummaryLogger]] = None,
) -> dict[str, dict[str, float]]:
    """Evaluate every named dataset and extra evaluation once; log each name to TensorBoard run
    `eval_<name>` and the console."""
    results: dict[str, dict[str, float]] = {}
    for name, dataset in plan.datasets.items():
        results[name] = evaluate(
            model, dataset, plan.metrics_factory(name), device, plan.num_eval_steps, enable_amp, f"eval {name}"
        )
    for name, extra in plan.extra_evaluations.items():
        model.eval()
        with torch.no_grad():
            values = _to_float_dict(extra(model, step))
        results.setdefault(name, {}).update(values)
    for name, values in results.items():
        logging.info(f"eval {name} @ step {step}: {format_scalars(values)}")
        if make_logger is not None:
            eval_logger = make_logger(f"eval_{name}")
            eval_logger.log(values, step)
            eval_logger.close()
    return results


def train_and_evaluate(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    save_dir: str,
    logging_interval: int,
    train_steps: int,
    checkpoint_frequency: int,
    dataset: Iterable[Any],
    worker_batch_size: int,
    eval_datasets: Mapping[str, Iterable[Any]],
    eval_metrics_factory: Callable[[str], torchmetrics.MetricCollection],
    num_eval_steps: int = 16384,
    eval_every_n: Optional[int] = None,
    extra_evaluations: Optional[Mapping[str, ExtraEvaluation]] = None,
    **train_kwargs: Any,
) -> TrainResult:
    """`train`, evaluating every dataset in `eval_datasets` and every `extra_evaluations` entry
    every `eval_every_n` steps (default: at each checkpoint) and at the end (see `EvaluationPlan`)."""
    plan = EvaluationPlan(eval_datasets, eval_metrics_factory, num_eval_steps, eval_every_n, dict(extra_evaluations or {}))
    return train(
        model,
        optimizer,
        device,
        save_dir,
        logging_interval,
        train_steps,
        checkpoint_frequency,
        dataset,
        worker_batch_size,
        evaluation=plan,
        **train_kwargs,
    )


def _from_chief(value: Any) -> Any:
    """Rank 0's `value` on every rank (ranks must agree on which checkpoint to load together)."""
    if get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def only_evaluate(
    model: torch.nn.Module,
    device: torch.device,
    save_dir: str,
    num_train_steps: int,
    eval_datasets: Mapping[str, Iterable[Any]],
    eval_metrics_factory: Callable[[str], torchmetrics.MetricCollection],
    num_eval_steps: int,
    eval_timeout_in_s: float,
    enable_amp: bool = False,
    seconds_to_sleep: float = 30.0,
    extra_evaluations: Optional[Mapping[str, ExtraEvaluation]] = None,
) -> dict[int, dict[str, dict[str, float]]]:
    """A separate evaluator: follow new checkpoints in `save_dir` as training writes them.

    Each new checkpoint (the newest one each time: checkpoints saved while an evaluation runs are
    skipped, as in the original) is evaluated on every dataset not yet marked done for it, its
    metrics written to TensorBoard run `eval_<name>` at the checkpoint's step, then marked
    (`<checkpoint>/evaled_by/<name>_DONE`). It stops after the checkpoint of step
    `num_train_steps`, or when no new checkpoint came for `eval_timeout_in_s` seconds. Rank 0
    decides which checkpoint every rank loads. Returns results per step.
    """
    from tml.common.checkpointing import is_done_eval, load_model_weights, step_from_checkpoint

    extras = dict(extra_evaluations or {})
    names = list(dict.fromkeys([*eval_datasets, *extras]))
    make_logger = RunLoggers(save_dir)
    all_results: dict[int, dict[str, dict[str, float]]] = {}
    try:
        checkpoints = (
            checkpoints_iterator(save_dir, seconds_to_sleep=seconds_to_sleep, timeout=eval_timeout_in_s)
            if is_chief() else None
        )
        while True:
            found = None
            if checkpoints is not None:
                checkpoint = next(checkpoints, None)
                if checkpoint is not None:
                    found = (checkpoint, [name for name in names if not is_done_eval(checkpoint, name)])
            found = _from_chief(found)
            if found is None:
                logging.info(f"no new checkpoint in {save_dir} for {eval_timeout_in_s:g} s; the evaluator stops")
                break
            checkpoint, pending = found
            step = step_from_checkpoint(checkpoint)
            if pending:
                logging.info(f"evaluating {checkpoint} (step {step}) on {pending}")
                load_model_weights(model, checkpoint)
                plan = EvaluationPlan(
                    {name: eval_datasets[name] for name in pending if name in eval_datasets},
                    eval_metrics_factory,
                    num_eval_steps,
                    extra_evaluations={name: extras[name] for name in pending if name in extras},
                )
                all_results[step] = run_evaluations(model, plan, device, step, enable_amp, make_logger)
                if is_chief():
                    for name in pending:
                        mark_done_eval(checkpoint, name)
            else:
                logging.info(f"{checkpoint} is already evaluated on {names}")
            if step >= num_train_steps:
                logging.info(f"evaluated the last checkpoint (step {step} of {num_train_steps}); the evaluator stops")
                break
    finally:
        make_logger.close()
    return all_results


def evaluator_poll_seconds(eval_timeout_in_s: float) -> float:
    """How often an evaluator looks for a new checkpoint: every 30 s as the original, or more often
    when the timeout is short."""
    return min(30.0, max(0.5, eval_timeout_in_s / 20))
