from pathlib import Path

import pydantic
import pytest
import yaml

from tml.common.wandb import WandbConfig
from tml.core.config import BaseConfig, ConfigError, validate_config
from tml.core.config.training import RuntimeConfig, TrainingConfig

ORIGINAL_CONFIGS = Path(__file__).resolve().parents[3].parent / "shared" / "original"


def test_training_defaults_match_the_original():
    assert TrainingConfig().model_dump() == {
        "save_dir": "/tmp/model",
        "num_train_steps": 10000,
        "initial_checkpoint_dir": None,
        "checkpoint_every_n": 1000,
        "checkpoint_max_to_keep": None,
        "train_log_every_n": 1000,
        "num_eval_steps": 16384,
        "eval_log_every_n": 5000,
        "eval_timeout_in_s": 3600.0,
        "gradient_accumulation": None,
        "num_epochs": 1,
        "async_checkpointing": False,  # ours: the original always snapshotted asynchronously
        "max_skipped_nonfinite_steps": 0,  # ours: the original trained on through NaN
        "wait_for_evaluators": False,  # ours: the original had the function but no setting or caller
    }
    assert isinstance(TrainingConfig().eval_timeout_in_s, float)


def test_runtime_defaults():
    assert RuntimeConfig().model_dump() == {
        "wandb": None,
        "enable_tensorfloat32": False,
        "enable_amp": False,
        "linear_kernel": "auto",  # ours: the original always used torch's default BLAS
    }


def test_an_unknown_linear_kernel_is_refused_by_name():
    with pytest.raises(pydantic.ValidationError, match="linear_kernel"):
        RuntimeConfig(linear_kernel="mkl")


def test_every_field_is_described():
    for config_cls in (TrainingConfig, RuntimeConfig, WandbConfig):
        undocumented = [name for name, field in config_cls.model_fields.items() if not field.description]
        assert undocumented == [], config_cls.__name__


def test_initial_checkpoint_dir_is_in_the_initialization_group():
    assert TrainingConfig.field_groups("at_most_one_of") == {"initialization": ["initial_checkpoint_dir"]}


def test_negative_num_eval_steps_is_allowed():
    assert TrainingConfig(num_eval_steps=-1).num_eval_steps == -1


@pytest.mark.parametrize(
    "field, value",
    [("num_train_steps", 0), ("checkpoint_every_n", -1), ("checkpoint_max_to_keep", 0),
     ("train_log_every_n", 0), ("eval_log_every_n", 0), ("eval_timeout_in_s", 0.0), ("num_epochs", 0)],
)
def test_positive_fields_reject_non_positive(field, value):
    with pytest.raises(ConfigError, match=rf"training\.{field}: Input should be greater than 0 \(got {value}\)"):
        validate_config(_Wrapper, {"training": {field: value}})


def test_gradient_accumulation_must_be_at_least_one():
    assert TrainingConfig(gradient_accumulation=1).gradient_accumulation == 1
    assert TrainingConfig(gradient_accumulation=4).gradient_accumulation == 4
    with pytest.raises(pydantic.ValidationError, match="greater than or equal to 1"):
        TrainingConfig(gradient_accumulation=0)


def test_wandb_key_path_is_optional_and_there_is_no_internal_host():
    assert WandbConfig().key_path is None  # no key: WANDB_API_KEY, else offline (tml.common.wandb)
    config = WandbConfig(key_path="/secrets/wandb")
    assert config.host is None and config.tags == [] and config.metadata is None
    assert WandbConfig(key_path="k").tags is not config.tags  # no shared mutable default


class _Wrapper(BaseConfig):
    training: TrainingConfig = TrainingConfig()
    runtime: RuntimeConfig = RuntimeConfig()


@pytest.mark.skipif(not ORIGINAL_CONFIGS.is_dir(), reason="original config files not available")
@pytest.mark.parametrize("file_name", ["twhin_local.yaml", "recap_local_prod.yaml"])
def test_original_training_sections_load(file_name):
    tree = yaml.safe_load((ORIGINAL_CONFIGS / file_name).read_text())
    sections = {key: tree[key] for key in ("training", "runtime") if key in tree}
    config = _Wrapper.model_validate(sections)
    assert config.training.num_train_steps == tree["training"]["num_train_steps"]
