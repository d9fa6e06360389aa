"""Settings shared by every training entry point: the loop's schedule and the runtime switches."""
from __future__ import annotations

from typing import Literal, Optional

import pydantic
from pydantic import NonNegativeInt, PositiveFloat, PositiveInt

from tml.common.wandb import WandbConfig
from tml.core.config.base_config import BaseConfig


LinearKernel = Literal["auto", "torch", "onednn"]


class RuntimeConfig(BaseConfig):
    wandb: Optional[WandbConfig] = pydantic.Field(
        None,
        description="When set, rank 0 also logs every scalar it writes to TensorBoard to a Weights & Biases "
        "run (the config as its run config; offline without an API key).",
    )
    enable_tensorfloat32: bool = pydantic.Field(
        False, description="Allow TF32 matmuls/convolutions on Ampere+ GPUs (faster, ~10 bit mantissa)."
    )
    enable_amp: bool = pydantic.Field(
        False, description="Run the forward pass under bfloat16 autocast (automatic mixed precision)."
    )
    linear_kernel: LinearKernel = pydantic.Field(
        "auto",
        description="Who computes the fp32 products of large Linear layers on CPU: 'auto' (oneDNN on x86-64 "
        "CPUs not made by Intel, where MKL's vendor dispatch makes torch's products slower; else torch), "
        "'onednn', or 'torch' (torch's default BLAS: bit-identical to the original's code). See "
        "tml.common.modules.linear_kernel.",
    )


class TrainingConfig(BaseConfig):
    save_dir: str = pydantic.Field(
        "/tmp/model",
        description="Directory (local or fsspec URL) for checkpoints and logs; training resumes from "
        "its latest checkpoint.",
    )
    num_train_steps: PositiveInt = pydantic.Field(10000, description="Number of optimizer steps to train for.")
    initial_checkpoint_dir: Optional[str] = pydantic.Field(
        None,
        description="Checkpoint to warm-start model and optimizer from when save_dir holds none "
        "(the step count starts at 0).",
        json_schema_extra={"at_most_one_of": "initialization"},
    )
    checkpoint_every_n: PositiveInt = pydantic.Field(1000, description="Save a checkpoint every this many steps.")
    checkpoint_max_to_keep: Optional[PositiveInt] = pydantic.Field(
        None, description="Keep only this many newest checkpoints; None keeps all."
    )
    async_checkpointing: bool = pydantic.Field(
        False,
        description="Write checkpoints in a background thread (the original's asynchronous snapshots): "
        "training continues once the state is copied to host memory, and a checkpoint is published "
        "when the next one starts or training ends.",
    )
    train_log_every_n: PositiveInt = pydantic.Field(
        1000, description="Log loss and throughput every this many training steps."
    )
    num_eval_steps: int = pydantic.Field(
        16384, description="Batches per evaluation; a negative value evaluates the entire dataset."
    )
    eval_log_every_n: PositiveInt = pydantic.Field(
        5000, description="Evaluate (and log the metrics) every this many training steps."
    )
    eval_timeout_in_s: PositiveFloat = pydantic.Field(
        3600.0,
        description="A separate evaluator gives up after waiting this long for a new checkpoint (and a "
        "trainer with wait_for_evaluators after waiting this long for the evaluator).",
    )
    wait_for_evaluators: bool = pydantic.Field(
        False,
        description="With --mode train beside a separate evaluator (--mode evaluate): write each "
        "checkpoint only once the evaluator has marked the previous one done for every validation set, "
        "and finish once it has marked the last one, so every checkpoint is evaluated and "
        "checkpoint_max_to_keep never deletes one it has not read. Each wait is bounded by "
        "eval_timeout_in_s; after a timeout the trainer stops waiting.",
    )
    gradient_accumulation: Optional[int] = pydantic.Field(
        None, ge=1, description="Accumulate gradients over this many batches per optimizer step; None = 1."
    )
    num_epochs: PositiveInt = pydantic.Field(1, description="Passes over the training data.")
    max_skipped_nonfinite_steps: NonNegativeInt = pydantic.Field(
        0,
        description="Steps whose loss is NaN/inf that are skipped (no update) before the run stops; "
        "0 stops at the first one, naming the step and the likely cause.",
    )
