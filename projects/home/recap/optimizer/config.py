"""The `optimizer` section of the Heavy Ranker config: Adam with per-tower or single LR schedules."""

from __future__ import annotations

from typing import Dict, Optional

from pydantic import Field, PositiveFloat

from tml.core.config import BaseConfig
from tml.core.optimizers.config import LearningRate


class RecapAdamConfig(BaseConfig):
    beta_1: float = Field(0.9, ge=0.0, lt=1.0, description="Decay of the first-moment estimate.")
    beta_2: float = Field(0.999, ge=0.0, lt=1.0, description="Decay of the second-moment estimate.")
    epsilon: PositiveFloat = Field(1e-7, description="Added to the denominator for stability.")


class MultiTaskLearningRates(BaseConfig):
    tower_learning_rates: Dict[str, LearningRate] = Field(
        ..., description="One schedule per model task (key = task name)."
    )
    backbone_learning_rate: Optional[LearningRate] = Field(
        None,
        description="Schedule for every dense parameter outside the towers (backbone, featurization, "
        "TwHIN LayerNorms, small embeddings); required whenever such parameters exist.",
    )


class RecapOptimizerConfig(BaseConfig):
    multi_task_learning_rates: Optional[MultiTaskLearningRates] = Field(
        None, json_schema_extra={"one_of": "lr"}, description="A parameter group per tower plus the backbone."
    )
    single_task_learning_rate: Optional[LearningRate] = Field(
        None, json_schema_extra={"one_of": "lr"}, description="One schedule for all dense parameters."
    )
    adam: RecapAdamConfig
