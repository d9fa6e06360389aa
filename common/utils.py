"""Compatibility entry of the original: `setup_configuration` is the YAML loader by another name."""
from __future__ import annotations

import os
from typing import TypeVar

import pydantic

from tml.core.config.config_load import load_config_from_yaml

ConfigT = TypeVar("ConfigT", bound=pydantic.BaseModel)


def setup_configuration(
    config_type: type[ConfigT], yaml_path: str | os.PathLike, substitute_env_variable: bool = False
) -> ConfigT:
    """Load `yaml_path` as `config_type`, expanding `$VAR`s only when asked.

    Unlike the original (which substituted on the parsed dict and crashed), substitution runs on
    the text, exactly as in `load_config_from_yaml`.
    """
    return load_config_from_yaml(config_type, yaml_path, substitute_env=substitute_env_variable)
