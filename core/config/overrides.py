"""Command-line overrides of a loaded YAML tree: `dotted.path=value`, value parsed as YAML.

Paths address mapping keys and list indices (`model.mask_blocks.0.output_size=8`). Keys that
contain dots (recap names validation sets `recap.engagement.is_favorited`) are found by trying
the longest run of path elements that is an existing key, or can be quoted explicitly:
`validation_data."recap.engagement.is_favorited".global_batch_size=64`.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, NamedTuple

import yaml

from tml.core.config.errors import ConfigError, render_path, short_repr


class _QuotedKey(str):
    """A path element written in quotes: always one key, never joined with its neighbours."""


class Override(NamedTuple):
    text: str  # as given, for error messages
    path: tuple[str, ...]
    value: Any


_PATH_ELEMENT = r'"[^"]*"|[^."]+'
_PATH = re.compile(rf"(?:{_PATH_ELEMENT})(?:\.(?:{_PATH_ELEMENT}))*")


def _split_path(path_text: str, override_text: str) -> tuple[str, ...]:
    if not _PATH.fullmatch(path_text):
        raise ConfigError(
            f"Override {override_text!r}: bad key path {path_text!r} (elements are separated by single "
            "dots; quote a key that contains dots)."
        )
    elements = re.findall(_PATH_ELEMENT, path_text)
    return tuple(_QuotedKey(e[1:-1]) if e.startswith('"') else e for e in elements)


def parse_override(text: str) -> Override:
    key, sep, raw_value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"Override {text!r} must look like dotted.path=value (e.g. training.num_train_steps=100)."
        )
    try:
        value = yaml.safe_load(raw_value)
    except yaml.YAMLError as error:
        raise ConfigError(
            f"Override {text!r}: the value is not valid YAML ({error}); quote it to pass a plain string."
        ) from error
    return Override(text, _split_path(key.strip(), text), value)


def parse_overrides(values: Iterable[str | Override] | None) -> list[Override]:
    """Parse `--set` values (already-parsed Overrides pass through); None means no overrides."""
    return [value if isinstance(value, Override) else parse_override(value) for value in values or ()]


def _unshared_copy(node: Any) -> Any:
    """Deep copy that also splits YAML aliases: an override must change only the place it names."""
    if isinstance(node, dict):
        return {key: _unshared_copy(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_unshared_copy(value) for value in node]
    return node


def _mapping_key(node: dict, path: tuple[str, ...], start: int) -> tuple[Any, int]:
    """(key in `node`, index of the next path element) for the path suffix starting at `start`."""
    first = path[start]
    if isinstance(first, _QuotedKey):
        return str(first), start + 1
    end = start
    while end < len(path) and not isinstance(path[end], _QuotedKey):
        end += 1
    for stop in range(end, start + 1, -1):
        joined = ".".join(path[start:stop])
        if joined in node:
            return joined, stop
    if first not in node and first.lstrip("-").isdigit() and int(first) in node:
        return int(first), start + 1  # YAML mappings may have integer keys
    return first, start + 1


def _list_index(node: list, element: str, override: Override, walked: list[Any]) -> int:
    if not element.isdigit() or int(element) >= len(node):
        raise ConfigError(
            f"Override {override.text!r}: '{render_path(walked)}' is a list of {len(node)} items; "
            f"{element!r} is not a valid index."
        )
    return int(element)


def apply_override(tree: dict, override: Override) -> tuple[Any, ...]:
    """Set the override in `tree` in place; returns the key path it resolved to."""
    node: Any = tree
    walked: list[Any] = []
    position = 0
    while True:
        if isinstance(node, dict):
            key, position = _mapping_key(node, override.path, position)
        elif isinstance(node, list):
            key, position = _list_index(node, override.path[position], override, walked), position + 1
        else:
            raise ConfigError(
                f"Override {override.text!r}: '{render_path(walked)}' is the {type(node).__name__} "
                f"{short_repr(node)}, not a mapping or list, so it has no '{override.path[position]}'."
            )
        walked.append(key)
        if position == len(override.path):
            node[key] = override.value
            return tuple(walked)
        child = node.get(key) if isinstance(node, dict) else node[key]
        if child is None:  # absent or explicit null: the override creates the mapping
            child = node[key] = {}
        node = child


def apply_overrides(tree: dict, overrides: Iterable[Override]) -> tuple[dict, list[tuple[tuple[Any, ...], str]]]:
    """A copy of `tree` with `overrides` applied in order, and (resolved key path, text) per override."""
    result = _unshared_copy(tree)
    applied = [(apply_override(result, override), override.text) for override in overrides]
    return result, applied
