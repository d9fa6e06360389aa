"""Config classes and their loading: `BaseConfig` to define, `load_config_from_yaml` to read."""
from tml.core.config.base_config import BaseConfig
from tml.core.config.config_load import (
    ConfigError,
    add_config_arguments,
    load_config_from_args,
    load_config_from_yaml,
    validate_config,
)

__all__ = [
    "BaseConfig",
    "ConfigError",
    "add_config_arguments",
    "load_config_from_args",
    "load_config_from_yaml",
    "validate_config",
]
