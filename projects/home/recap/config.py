"""The Heavy Ranker's whole config: one YAML file with these top-level sections.

    training:        the loop's schedule (recap's TrainingConfig: core's without num_epochs, plus seed)
    runtime:         amp / tf32 / Linear-kernel switches (an addition; absent in the original's files, defaults apply)
    model:           ModelConfig (model/config.py)
    train_data:      RecapDataConfig (data/config.py)
    validation_data: name -> RecapDataConfig, each evaluated on its own `evaluation_tasks`
    optimizer:       RecapOptimizerConfig (optimizer/config.py)
    which_metrics:   kept from the original, unused

As in the original, the classes do not cross-check model tasks against data tasks: the entry point
does that at start-up (`tml.projects.home.recap.job.check_tasks`), where it can name both sides.
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional

import pydantic
from pydantic import Field, NonNegativeInt, PositiveInt

from tml.core.config import BaseConfig
from tml.core.config.training import RuntimeConfig
from tml.core.config.training import TrainingConfig as CoreTrainingConfig
from tml.core.job_mode import JobMode  # noqa: F401 (the original's import path)
from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.model.config import ModelConfig
from tml.projects.home.recap.optimizer.config import RecapOptimizerConfig

DEFAULT_NUM_TRAIN_STEPS = 1_000_000


def _training_fields() -> Dict[str, Any]:
    """Core's fields, minus `num_epochs` (recap trains for a number of steps over repeating data)."""
    fields: Dict[str, Any] = {
        name: (field.annotation, copy.copy(field))
        for name, field in CoreTrainingConfig.model_fields.items()
        if name != "num_epochs"
    }
    fields["num_train_steps"] = (
        PositiveInt,
        Field(DEFAULT_NUM_TRAIN_STEPS, description="Number of optimizer steps to train for."),
    )
    fields["seed"] = (
        Optional[NonNegativeInt],
        Field(
            None,
            description="Seeds the model's initialisation, dropout and the training data's order (it "
            "replaces train_data.seed). None: train_data.seed seeds all three. Two runs of one config on "
            "one machine and world size give the same metrics.",
        ),
    )
    return fields


# Built from core's fields so that both stay in step; the original re-declared the class by hand.
TrainingConfig = pydantic.create_model(  # type: ignore[call-overload]
    "TrainingConfig",
    __base__=BaseConfig,
    __module__=__name__,
    __doc__="Core TrainingConfig without num_epochs, plus `seed`; num_train_steps defaults to 1,000,000.",
    **_training_fields(),
)


def run_seed(config: "RecapConfig") -> int:
    """The one seed of a run: `training.seed`, else `train_data.seed`."""
    seed = config.training.seed
    return config.train_data.seed if seed is None else seed


class RecapConfig(BaseConfig):
    training: TrainingConfig = Field(default_factory=TrainingConfig)  # type: ignore[valid-type]
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig,
        description="bf16 autocast (enable_amp), TF32 switches and the CPU kernel of Linear layers (linear_kernel).",
    )
    model: ModelConfig
    train_data: RecapDataConfig
    validation_data: Dict[str, RecapDataConfig] = Field(
        default_factory=dict,
        description="Evaluation sets by name; each reports metrics for its evaluation_tasks "
        "(all model tasks when empty).",
    )
    optimizer: RecapOptimizerConfig
    which_metrics: Optional[str] = Field(None, description="Kept from the original; unused.")

    @pydantic.field_validator("validation_data")
    @classmethod
    def _validation_sets_read_files(cls, sets: Dict[str, RecapDataConfig]) -> Dict[str, RecapDataConfig]:
        # An evaluation needs the same complete pass every time; readers serve one endless stream.
        remote = [name for name, data_config in sets.items() if data_config.remote_readers]
        if remote:
            raise ValueError(
                f"validation sets {remote} set remote_readers: only train_data reads from remote readers; "
                "validation sets are read from their files (remove remote_readers there)."
            )
        return sets
