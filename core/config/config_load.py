"""Load a config class from a YAML file (local or any fsspec URL) plus command-line overrides.

Steps, in order: read the text; expand `$VAR`/`${VAR}` from the environment (on the text, so
values of any type can come from variables); parse YAML (anchors, aliases and `<<:` merge keys
work); apply `--set dotted.path=value` overrides; validate with the config class. Every failure
becomes a `ConfigError` (or FileNotFoundError) that names the file and, where it applies, the field.
"""
from __future__ import annotations

import argparse
import getpass
import os
import string
from typing import Any, Mapping, Sequence, TypeVar

import fsspec
import pydantic
import yaml

from tml.common.output_dirs import OUTPUT_ROOT_VARIABLE, output_root
from tml.core.config.errors import ConfigError, format_validation_error
from tml.core.config.overrides import Override, apply_overrides, parse_overrides

__all__ = [
    "ConfigError",
    "add_config_arguments",
    "load_config_from_args",
    "load_config_from_yaml",
    "parse_overrides",
    "substitute_env_variables",
    "validate_config",
]

ConfigT = TypeVar("ConfigT", bound=pydantic.BaseModel)


def _login_name() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login env vars and no passwd entry (bare containers)
        return None


# The repository root is the `tml` package (core/config/config_load.py is two levels below it).
_TML_BASE_DEFAULT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def substitute_env_variables(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand `$VAR`/`${VAR}`; unknown variables stay as written, `$$` is a literal `$`.

    USER is always the login name, so configs that build paths from it work where the
    environment does not export it (cron, containers). TML_BASE, which the original's configs use
    for paths inside the repository, defaults to the installed tml package's directory; TML_OUTPUT,
    the base folder of the repository configs' data and runs, to `tml.common.output_dirs.output_root()`.
    """
    variables = {"TML_BASE": _TML_BASE_DEFAULT, **(os.environ if environ is None else environ)}
    if not variables.get(OUTPUT_ROOT_VARIABLE, "").strip():
        variables[OUTPUT_ROOT_VARIABLE] = output_root()
    login = _login_name()
    if login is not None:
        variables["USER"] = login
    return string.Template(text).safe_substitute(variables)


def _read_text(path: str) -> str:
    try:
        with fsspec.open(path, "r", encoding="utf-8") as stream:
            return stream.read()
    except FileNotFoundError as error:
        raise ConfigFileNotFoundError(f"config file not found: {path}", path) from error
    except IsADirectoryError as error:
        raise ConfigError(f"config path {path} is a directory; give the YAML file inside it", path) from error


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """The config file does not exist (a ConfigError, so entry points print it without a traceback)."""


def _parse_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{source}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else source
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"YAML syntax error in {where}: {problem}", source) from error
    if tree is None:  # an empty file is an empty mapping: all defaults
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(
            f"Config file {source} must contain a mapping of config fields at the top level, "
            f"not a {type(tree).__name__}.",
            source,
        )
    return tree


def validate_config(
    config_cls: type[ConfigT],
    data: Any,
    source: str = "<data>",
    applied_overrides: Sequence[tuple[Sequence[Any], str]] = (),
) -> ConfigT:
    """`config_cls.model_validate(data)` with pydantic's errors rewritten as one readable ConfigError."""
    try:
        return config_cls.model_validate(data)
    except pydantic.ValidationError as error:
        message = format_validation_error(config_cls, error, f"in {source}", applied_overrides)
        raise ConfigError(message, source) from error


def load_config_from_yaml(
    config_cls: type[ConfigT],
    yaml_path: str | os.PathLike,
    overrides: Sequence[str | Override] = (),
    *,
    substitute_env: bool = True,
) -> ConfigT:
    """Read, substitute, parse, override and validate a config file (see the module docstring)."""
    source = os.fspath(yaml_path)
    parsed = parse_overrides(overrides)  # before any I/O: a typo on the command line fails fast
    text = _read_text(source)
    if substitute_env:
        text = substitute_env_variables(text)
    tree = _parse_yaml(text, source)
    applied: list[tuple[tuple[Any, ...], str]] = []
    if parsed:
        try:
            tree, applied = apply_overrides(tree, parsed)
        except ConfigError as error:
            raise ConfigError(f"{error} (config file {source})", source) from error
    return validate_config(config_cls, tree, source, applied)


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> argparse.ArgumentParser:
    """The flags every command shares: `--config_path FILE [--set key=value ...]` (see
    `tml.common.entry_point`, where every command line starts)."""
    from tml.common.entry_point import add_config_flags

    return add_config_flags(parser, required)


def load_config_from_args(config_cls: type[ConfigT], args: argparse.Namespace) -> ConfigT:
    """Load the config named by arguments added with `add_config_arguments`."""
    return load_config_from_yaml(config_cls, args.config_path, args.overrides)
