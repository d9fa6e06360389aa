import argparse
import getpass
import pwd
import os
import re
import textwrap
import uuid
from typing import Dict, List, Optional, Union

import fsspec
import pytest

from tml.common.utils import setup_configuration
from tml.core.config import (
    BaseConfig,
    ConfigError,
    add_config_arguments,
    load_config_from_args,
    load_config_from_yaml,
    validate_config,
)
from tml.core.config.config_load import parse_overrides, substitute_env_variables
from tml.core.config.training import TrainingConfig


class Block(BaseConfig):
    output_size: int = 4
    dropout: Optional[float] = None


class Model(BaseConfig):
    mask_blocks: List[Block] = []
    widths: List[int] = []


class Data(BaseConfig):
    global_batch_size: int = 32
    inputs: str = ""
    tasks: Dict[str, Dict[str, float]] = {}


class App(BaseConfig):
    training: TrainingConfig = TrainingConfig()
    model: Model = Model()
    train_data: Optional[Data] = None
    validation_data: Dict[str, Data] = {}
    paths: Dict[str, str] = {}


def write(tmp_path, text, name="config.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --- environment substitution -------------------------------------------------------------------


def test_env_variables_are_substituted_on_the_text(tmp_path, monkeypatch):
    monkeypatch.setenv("TML_TEST_DIR", "/data/run")
    monkeypatch.setenv("TML_TEST_STEPS", "250")  # substituted before parsing, so it becomes an int
    path = write(tmp_path, """
        training:
          save_dir: ${TML_TEST_DIR}/ckpt
          num_train_steps: $TML_TEST_STEPS
    """)
    config = load_config_from_yaml(App, path)
    assert config.training.save_dir == "/data/run/ckpt"
    assert config.training.num_train_steps == 250


def test_unknown_variables_stay_and_double_dollar_is_literal(tmp_path, monkeypatch):
    monkeypatch.delenv("TML_SURELY_UNSET", raising=False)
    path = write(tmp_path, """
        paths:
          unknown: $TML_SURELY_UNSET/x
          braced: ${TML_SURELY_UNSET}
          escaped: cost$$5
    """)
    assert load_config_from_yaml(App, path).paths == {
        "unknown": "$TML_SURELY_UNSET/x",
        "braced": "${TML_SURELY_UNSET}",
        "escaped": "cost$5",
    }


def test_user_is_the_login_name_even_when_the_environment_lacks_it(tmp_path, monkeypatch):
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    path = write(tmp_path, "paths:\n  home: /home/$USER\n")
    expected = pwd.getpwuid(os.getuid()).pw_name
    assert load_config_from_yaml(App, path).paths["home"] == f"/home/{expected}"


def test_user_wins_over_a_custom_environment():
    assert substitute_env_variables("$USER", environ={"USER": "someone-else"}) == getpass.getuser()


def test_substitution_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("TML_TEST_DIR", "/data")
    path = write(tmp_path, "paths:\n  a: $TML_TEST_DIR\n")
    assert load_config_from_yaml(App, path, substitute_env=False).paths["a"] == "$TML_TEST_DIR"


def test_setup_configuration_substitutes_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setenv("TML_TEST_DIR", "/data")
    path = write(tmp_path, "training:\n  save_dir: ${TML_TEST_DIR}/m\n")
    assert setup_configuration(App, str(path)).training.save_dir == "${TML_TEST_DIR}/m"
    config = setup_configuration(App, str(path), substitute_env_variable=True)
    assert isinstance(config, App)  # a config, not the original's (config, path) tuple annotation
    assert config.training.save_dir == "/data/m"


# --- YAML features and sources ------------------------------------------------------------------


def test_anchors_aliases_and_merge_keys(tmp_path):
    path = write(tmp_path, """
        train_data:
          global_batch_size: 128
          inputs: &root /data/*.gz
          tasks: &tasks
            fav: {pos_downsampling_rate: 1.0}
            reply: {pos_downsampling_rate: 1.0}
        validation_data:
          train:
            inputs: *root
            tasks: *tasks
          fav_only:
            inputs: *root
            tasks:
              <<: *tasks
              fav: {pos_downsampling_rate: 0.5}
    """)
    config = load_config_from_yaml(App, path)
    assert config.validation_data["train"].inputs == "/data/*.gz"
    assert config.validation_data["train"].tasks == config.train_data.tasks
    assert config.validation_data["fav_only"].tasks == {
        "fav": {"pos_downsampling_rate": 0.5},
        "reply": {"pos_downsampling_rate": 1.0},
    }


def test_fsspec_memory_path():
    path = f"memory://tml-config-test-{uuid.uuid4().hex}/config.yaml"
    with fsspec.open(path, "w") as stream:
        stream.write("training:\n  num_train_steps: 7\n")
    try:
        assert load_config_from_yaml(App, path).training.num_train_steps == 7
    finally:
        fsspec.filesystem("memory").rm(path)


def test_empty_file_gives_defaults(tmp_path):
    assert load_config_from_yaml(App, write(tmp_path, "")) == App()


# --- overrides ----------------------------------------------------------------------------------


BASE = """
    training:
      num_train_steps: 10
    model:
      mask_blocks:
        - output_size: 2
        - output_size: 3
    validation_data:
      train: &train
        global_batch_size: 16
      validation: *train
      recap.engagement.is_favorited:
        global_batch_size: 16
"""


def test_override_int_and_nested_values(tmp_path):
    config = load_config_from_yaml(
        App,
        write(tmp_path, BASE),
        ["training.num_train_steps=100", "validation_data.train.global_batch_size=64", "model.widths=[8, 4]"],
    )
    assert config.training.num_train_steps == 100
    assert config.validation_data["train"].global_batch_size == 64
    assert config.model.widths == [8, 4]


def test_override_changes_only_the_aliased_place_it_names(tmp_path):
    config = load_config_from_yaml(App, write(tmp_path, BASE), ["validation_data.train.global_batch_size=64"])
    assert config.validation_data["validation"].global_batch_size == 16


def test_override_list_index(tmp_path):
    config = load_config_from_yaml(App, write(tmp_path, BASE), ["model.mask_blocks.1.output_size=8"])
    assert [block.output_size for block in config.model.mask_blocks] == [2, 8]


def test_override_null_and_mapping_values(tmp_path):
    config = load_config_from_yaml(
        App,
        write(tmp_path, BASE),
        ["training.checkpoint_max_to_keep=3", "training.checkpoint_max_to_keep=null",
         "train_data={global_batch_size: 8, inputs: /x}"],
    )
    assert config.training.checkpoint_max_to_keep is None
    assert config.train_data == Data(global_batch_size=8, inputs="/x")


def test_override_creates_missing_mapping_keys(tmp_path):
    config = load_config_from_yaml(
        App, write(tmp_path, BASE), ["paths.out=/tmp/o", "validation_data.extra.global_batch_size=4"]
    )
    assert config.paths == {"out": "/tmp/o"}
    assert config.validation_data["extra"].global_batch_size == 4


def test_override_keys_containing_dots(tmp_path):
    config = load_config_from_yaml(
        App,
        write(tmp_path, BASE),
        ["validation_data.recap.engagement.is_favorited.global_batch_size=1",
         'validation_data."new.set".global_batch_size=2'],
    )
    assert config.validation_data["recap.engagement.is_favorited"].global_batch_size == 1
    assert config.validation_data["new.set"].global_batch_size == 2


def test_override_through_a_scalar_is_an_error(tmp_path):
    message = (
        "Override 'training.num_train_steps.x=1': 'training.num_train_steps' is the int 10, "
        "not a mapping or list, so it has no 'x'."
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config_from_yaml(App, write(tmp_path, BASE), ["training.num_train_steps.x=1"])


def test_override_bad_list_index(tmp_path):
    with pytest.raises(ConfigError, match=r"'model.mask_blocks' is a list of 2 items; '5' is not a valid index"):
        load_config_from_yaml(App, write(tmp_path, BASE), ["model.mask_blocks.5.output_size=1"])


@pytest.mark.parametrize("bad", ["training.num_train_steps", "=3", "a..b=1", "a.=1"])
def test_malformed_overrides(bad):
    with pytest.raises(ConfigError, match=re.escape(repr(bad))):
        parse_overrides([bad])


def test_override_value_must_be_yaml():
    with pytest.raises(ConfigError, match=r"'paths.a=\[1, 2': the value is not valid YAML"):
        parse_overrides(["paths.a=[1, 2"])


def test_invalid_override_value_is_attributed_to_the_override(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config_from_yaml(App, write(tmp_path, BASE), ["training.num_train_steps=-1"])
    assert (
        "training.num_train_steps: Input should be greater than 0 (got -1) "
        "[set by override 'training.num_train_steps=-1']" in str(caught.value)
    )


def test_cli_helpers(tmp_path):
    parser = add_config_arguments(argparse.ArgumentParser())
    path = write(tmp_path, BASE)
    args = parser.parse_args(
        ["--config_path", str(path), "--set", "training.num_train_steps=5", "--set", "paths.a=b"]
    )
    assert args.overrides == ["training.num_train_steps=5", "paths.a=b"]
    config = load_config_from_args(App, args)
    assert (config.training.num_train_steps, config.paths) == (5, {"a": "b"})
    assert parser.parse_args(["--config_path", "x"]).overrides == []


# --- errors -------------------------------------------------------------------------------------


def test_validation_errors_name_file_path_value_and_reason(tmp_path):
    path = write(tmp_path, """
        training:
          num_train_steps: -5
          num_train_step: 100
          eval_timeout_in_s: soon
        model:
          mask_blocks:
            - output_sise: 3
    """)
    with pytest.raises(ConfigError) as caught:
        load_config_from_yaml(App, path)
    message = str(caught.value)
    assert message.startswith(f"Invalid config in {path} (4 errors):")
    assert "  - training.num_train_steps: Input should be greater than 0 (got -5)" in message
    assert "  - unknown field 'training.num_train_step' (got 100); did you mean 'num_train_steps'?" in message
    assert "  - training.eval_timeout_in_s: Input should be a valid number" in message
    assert "(got 'soon')" in message
    assert "  - unknown field 'model.mask_blocks.0.output_sise' (got 3); did you mean 'output_size'?" in message
    assert isinstance(caught.value, ValueError)
    assert caught.value.source == str(path)


def test_unknown_field_without_close_match_lists_valid_fields(tmp_path):
    path = write(tmp_path, "model:\n  zzz: 1\n")
    message = "unknown field 'model.zzz' (got 1); valid fields here: mask_blocks, widths"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config_from_yaml(App, path)


def test_long_values_are_truncated(tmp_path):
    path = write(tmp_path, f"paths:\n  a: [{', '.join(['1'] * 200)}]\n")
    with pytest.raises(ConfigError) as caught:
        load_config_from_yaml(App, path)
    line = next(line for line in str(caught.value).splitlines() if "paths.a" in line)
    assert "(got [1, 1, 1" in line and "...)" in line and len(line) < 200


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "training:\n  num_train_steps: 1\n   save_dir: x\n")
    with pytest.raises(ConfigError, match=re.escape(f"YAML syntax error in {path}, line 3, column")):
        load_config_from_yaml(App, path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = write(tmp_path, "- a\n- b\n")
    message = f"Config file {path} must contain a mapping of config fields at the top level, not a list"
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config_from_yaml(App, path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        load_config_from_yaml(App, path)
    with pytest.raises(FileNotFoundError, match="memory://tml-no-such/config.yaml"):
        load_config_from_yaml(App, "memory://tml-no-such/config.yaml")


class Adam(BaseConfig):
    lr: float = 0.1
    beta_1: float = 0.9


class Sgd(BaseConfig):
    lr: float = 0.1
    momentum: float = 0.0


class Optimizers(BaseConfig):
    optimizer: Union[Adam, Sgd] = Adam()
    schedule: Union[float, List[Adam]] = 0.0


def test_union_errors_name_the_member_and_suggest_from_it():
    with pytest.raises(ConfigError) as caught:
        validate_config(Optimizers, {"optimizer": {"momentun": 0.5}, "schedule": [{"bta_1": 0.5}]}, "cli")
    lines = str(caught.value).splitlines()
    assert lines[0] == "Invalid config in cli (4 errors):"
    assert "  - schedule (as float): Input should be a valid number (got [{'bta_1': 0.5}])" in lines
    assert "  - unknown field 'optimizer.momentun' (as Adam) (got 0.5); valid fields here: beta_1, lr" in lines
    assert "  - unknown field 'optimizer.momentun' (as Sgd) (got 0.5); did you mean 'momentum'?" in lines
    assert "  - unknown field 'schedule.0.bta_1' (as list[Adam]) (got 0.5); did you mean 'beta_1'?" in lines


def test_tml_base_defaults_to_the_package_directory_and_the_environment_wins(monkeypatch):
    import tml
    from tml.core.config.config_load import substitute_env_variables

    monkeypatch.delenv("TML_BASE", raising=False)
    package_dir = os.path.dirname(os.path.abspath(tml.__file__))
    assert substitute_env_variables("${TML_BASE}/projects") == f"{package_dir}/projects"
    monkeypatch.setenv("TML_BASE", "/elsewhere")
    assert substitute_env_variables("$TML_BASE/x") == "/elsewhere/x"
