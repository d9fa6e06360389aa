"""Optimizer and learning-rate-schedule configs (field names and defaults as in the original).

`OptimizerConfig` configures a dense torch optimizer. `EmbeddingOptimizerConfig` configures the
optimizer that torchrec fuses into the embedding kernel (FBGEMM TBE) once a table is sharded.
"""
from __future__ import annotations

from typing import Annotated, List, Optional, Tuple

from pydantic import Field, PositiveInt, model_validator

from tml.core.config import BaseConfig

# An optimizer's lr must train: finite and > 0 (a negative one climbs the loss, inf diverges at
# once). Schedule values may be 0 (a warm-up's start, a frozen tower or table) but never negative.
LearningRateValue = Annotated[float, Field(gt=0, allow_inf_nan=False)]
LearningRateOrZero = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class PiecewiseConstant(BaseConfig):
    """`learning_rate_values[i]` applies from `learning_rate_boundaries[i-1]` (inclusive) on."""

    learning_rate_boundaries: List[int] = Field(
        description="Steps at which the next value starts; strictly increasing."
    )
    learning_rate_values: List[LearningRateOrZero] = Field(
        description="One more value than boundaries: the first applies before the first boundary."
    )

    @model_validator(mode="after")
    def _check_shape(self) -> "PiecewiseConstant":
        boundaries, values = self.learning_rate_boundaries, self.learning_rate_values
        if len(values) != len(boundaries) + 1:
            raise ValueError(
                f"piecewise_constant needs len(learning_rate_values) == len(learning_rate_boundaries) + 1, "
                f"got {len(values)} values for {len(boundaries)} boundaries."
            )
        if any(left >= right for left, right in zip(boundaries, boundaries[1:])):
            raise ValueError(
                f"piecewise_constant learning_rate_boundaries must be strictly increasing, got {boundaries}."
            )
        return self


class LinearRampToConstant(BaseConfig):
    """Ramp from 0 at step 0 to `learning_rate` at `num_ramp_steps`, then stay there."""

    learning_rate: LearningRateValue
    num_ramp_steps: PositiveInt = Field(description="Steps to go from 0 to learning_rate.")


class LinearRampToCosine(BaseConfig):
    """Linear warm-up to `learning_rate`, cosine decay to `final_learning_rate` at `final_num_steps`."""

    learning_rate: LearningRateValue = Field(description="Peak learning rate, reached at num_ramp_steps.")
    final_learning_rate: LearningRateOrZero = Field(description="Learning rate at and after final_num_steps.")
    num_ramp_steps: PositiveInt = Field(description="Steps of linear warm-up from 0.")
    final_num_steps: PositiveInt = Field(description="Step at which the cosine decay ends.")

    @model_validator(mode="after")
    def _check_steps(self) -> "LinearRampToCosine":
        if self.final_num_steps <= self.num_ramp_steps:
            raise ValueError(
                f"linear_ramp_to_cosine needs final_num_steps > num_ramp_steps, got "
                f"final_num_steps={self.final_num_steps}, num_ramp_steps={self.num_ramp_steps}."
            )
        return self


class LearningRate(BaseConfig):
    """A learning rate as a function of the training step: exactly one schedule is set."""

    constant: Optional[LearningRateOrZero] = Field(None, json_schema_extra={"one_of": "lr"})
    linear_ramp_to_cosine: Optional[LinearRampToCosine] = Field(None, json_schema_extra={"one_of": "lr"})
    linear_ramp_to_constant: Optional[LinearRampToConstant] = Field(
        None, json_schema_extra={"one_of": "lr"}
    )
    piecewise_constant: Optional[PiecewiseConstant] = Field(None, json_schema_extra={"one_of": "lr"})


class OptimizerAlgorithmConfig(BaseConfig):
    """Base of the algorithm configs; `lr` is the initial rate, which a schedule then overrides."""

    lr: LearningRateValue


class AdamConfig(OptimizerAlgorithmConfig):
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-7


class SgdConfig(OptimizerAlgorithmConfig):
    momentum: float = 0.0


class AdagradConfig(OptimizerAlgorithmConfig):
    eps: float = 0


class OptimizerConfig(BaseConfig):
    """A dense optimizer: one algorithm plus an optional schedule (constant `lr` without one)."""

    learning_rate: Optional[LearningRate] = Field(
        None, description="Schedule for the learning rate; None keeps the algorithm's lr constant."
    )
    adam: Optional[AdamConfig] = Field(None, json_schema_extra={"one_of": "optimizer"})
    sgd: Optional[SgdConfig] = Field(None, json_schema_extra={"one_of": "optimizer"})
    adagrad: Optional[AdagradConfig] = Field(None, json_schema_extra={"one_of": "optimizer"})


class FusedSgdConfig(OptimizerAlgorithmConfig):
    """Plain SGD: the fused embedding kernel has no momentum."""


class FusedAdagradConfig(OptimizerAlgorithmConfig):
    # Not 0 as in AdagradConfig: the kernel updates every looked-up row, and a row with a zero
    # gradient and zero accumulator would turn NaN.
    eps: float = Field(1e-8, description="Added to the root of the squared-gradient sum.")


class FusedRowWiseAdagradConfig(OptimizerAlgorithmConfig):
    """Adagrad with one accumulator per embedding row (the mean of its squared gradients)."""

    eps: float = Field(1e-8, description="Added to the root of the squared-gradient sum.")


class EmbeddingOptimizerConfig(BaseConfig):
    """The optimizer fused into sharded embedding tables (applied in backward by torchrec/FBGEMM).

    Only algorithms that FBGEMM's CPU kernels implement are offered: its fused Adam fails on CPU
    with "Optimizer adam is not supported in CPU mode".
    """

    learning_rate: Optional[LearningRate] = Field(
        None, description="Schedule for the learning rate; None keeps the algorithm's lr constant."
    )
    sgd: Optional[FusedSgdConfig] = Field(None, json_schema_extra={"one_of": "optimizer"})
    adagrad: Optional[FusedAdagradConfig] = Field(None, json_schema_extra={"one_of": "optimizer"})
    rowwise_adagrad: Optional[FusedRowWiseAdagradConfig] = Field(
        None, json_schema_extra={"one_of": "optimizer"}
    )


def chosen_algorithm(optimizer_config: OptimizerConfig | EmbeddingOptimizerConfig) -> str:
    """Field name of the one algorithm that is set ("adam", "sgd", ...)."""
    for name in type(optimizer_config).field_groups("one_of")["optimizer"]:
        if getattr(optimizer_config, name) is not None:
            return name
    raise ValueError(f"No optimizer algorithm is set in {optimizer_config!r}.")


def get_optimizer_algorithm_config(
    optimizer_config: OptimizerConfig | EmbeddingOptimizerConfig,
) -> OptimizerAlgorithmConfig:
    """The one algorithm config that is set (the field-group check guarantees exactly one)."""
    return getattr(optimizer_config, chosen_algorithm(optimizer_config))


def get_learning_rate(optimizer_config: OptimizerConfig | EmbeddingOptimizerConfig) -> LearningRate:
    """The configured schedule, or the algorithm's `lr` held constant when none is given."""
    if optimizer_config.learning_rate is not None:
        return optimizer_config.learning_rate
    return LearningRate(constant=get_optimizer_algorithm_config(optimizer_config).lr)
