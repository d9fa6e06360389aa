"""Readable config errors: which file, which field (as a dotted path), what value, why.

pydantic's raw errors speak in validator internals (union members appear as
`function-after[_check_field_groups(), Foo]` path elements); the people reading them edit YAML,
so errors are rewritten in YAML terms, with a spelling suggestion for unknown fields.
"""
from __future__ import annotations

import difflib
import re
import types
from collections import abc
import typing
from typing import Any, Iterable, Sequence

import pydantic

_MAX_VALUE_CHARS = 80
_MAX_LISTED_FIELDS = 15


class ConfigError(ValueError):
    """A config that cannot be loaded: bad YAML, bad override or values that fail validation."""

    def __init__(self, message: str, source: str | None = None):
        super().__init__(message)
        self.source = source


def render_path(parts: Iterable[Any]) -> str:
    """Dotted path as written in YAML overrides; keys that contain dots are quoted."""
    rendered = [f'"{part}"' if isinstance(part, str) and "." in part else str(part) for part in parts]
    return ".".join(rendered) or "(top level)"


def short_repr(value: Any, limit: int = _MAX_VALUE_CHARS) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unwrap(tp: Any) -> list[Any]:
    """The concrete alternatives a type annotation allows (Optional/Union/Annotated flattened, no None)."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [alt for arg in typing.get_args(tp) for alt in _unwrap(arg)]
    if tp is type(None):
        return []
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, pydantic.BaseModel)


def _child_type(tp: Any, key: Any) -> Any | None:
    """Type found under `key` inside a value of type `tp`, or None when `tp` has no such child."""
    if _is_model(tp):
        field = tp.model_fields.get(key) if isinstance(key, str) else None
        return field.annotation if field is not None else None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, set, frozenset, abc.Sequence, abc.MutableSequence):
        return args[0] if args and isinstance(key, int) else None
    if origin is tuple and args and isinstance(key, int):
        if len(args) == 2 and args[1] is Ellipsis:
            return args[0]
        return args[key] if key < len(args) else None
    if isinstance(origin, type) and issubclass(origin, abc.Mapping):
        return args[1] if len(args) == 2 else None
    return None


def _matches_union_tag(tp: Any, tag: str) -> bool:
    """Whether `tag` is how pydantic names union member `tp` in an error location."""
    name = getattr(tp, "__name__", None)
    if name and (tag == name or tag.endswith(f", {name}]")):
        return True
    if _is_model(tp):  # discriminated unions use the discriminator's literal value as the tag
        for field in tp.model_fields.values():
            if typing.get_origin(field.annotation) is typing.Literal and tag in typing.get_args(field.annotation):
                return True
    return tag.lower() == str(tp).replace("typing.", "").lower()


_VALIDATOR_WRAPPER = re.compile(r"function-(?:after|before|wrap|plain)\[[^\[\]]*, ([^\[\]]+)\]")


def _readable_tag(tag: str) -> str:
    """`list[function-after[_check_field_groups(), Block]]` -> `list[Block]`."""
    while True:
        simpler = _VALIDATOR_WRAPPER.sub(r"\1", tag)
        if simpler == tag:
            return tag
        tag = simpler


class _LocationInfo(typing.NamedTuple):
    path: list[Any]  # loc without pydantic's union-member tags
    member: str | None  # union member the error is about, e.g. "AdamConfig"
    parent_fields: list[str]  # valid field names where the last path element sits


def _describe_location(config_cls: type[pydantic.BaseModel], loc: Sequence[Any]) -> _LocationInfo:
    """Walk `config_cls` along an error `loc`, dropping union tags and finding valid sibling names."""
    candidates: list[Any] = [config_cls]
    parent_candidates: list[Any] = [config_cls]
    path: list[Any] = []
    member: str | None = None
    for element in loc:
        alternatives = [alt for tp in candidates for alt in _unwrap(tp)]
        if isinstance(element, str) and len(alternatives) > 1 and not any(
            _child_type(alt, element) is not None for alt in alternatives
        ):
            tagged = [alt for alt in alternatives if _matches_union_tag(alt, element)]
            candidates = tagged or alternatives
            member = tagged[0].__name__ if tagged and _is_model(tagged[0]) else _readable_tag(element)
            continue
        path.append(element)
        parent_candidates = alternatives
        children = [_child_type(alt, element) for alt in alternatives]
        candidates = [child for child in children if child is not None]
    parent_fields = sorted(
        {name for tp in parent_candidates if _is_model(tp) for name in tp.model_fields}
    )
    return _LocationInfo(path, member, parent_fields)


def _unknown_field_hint(name: Any, valid: list[str]) -> str:
    if not valid:
        return ""
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    listed = ", ".join(valid[:_MAX_LISTED_FIELDS]) + (", ..." if len(valid) > _MAX_LISTED_FIELDS else "")
    return f"; valid fields here: {listed}"


def _reason(error: dict[str, Any]) -> str:
    message = error["msg"]
    if error["type"] == "value_error" and message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return message


def describe_error(config_cls: type[pydantic.BaseModel], error: dict[str, Any]) -> tuple[list[Any], str]:
    """(clean dotted path, one readable line) for one entry of `ValidationError.errors()`."""
    info = _describe_location(config_cls, error["loc"])
    where = render_path(info.path)
    as_member = f" (as {info.member})" if info.member else ""
    if error["type"] == "extra_forbidden" and info.path:
        hint = _unknown_field_hint(info.path[-1], info.parent_fields)
        return info.path, f"unknown field '{where}'{as_member} (got {short_repr(error['input'])}){hint}"
    if error["type"] == "missing":
        return info.path, f"missing required field '{where}'{as_member}"
    if error["type"] in ("value_error", "assertion_error") and isinstance(error["input"], dict):
        # A model-level check: the input is the whole mapping and the reason already names the fields.
        return info.path, f"{where}{as_member}: {_reason(error)}"
    return info.path, f"{where}{as_member}: {_reason(error)} (got {short_repr(error['input'])})"


def format_validation_error(
    config_cls: type[pydantic.BaseModel],
    error: pydantic.ValidationError,
    source: str,
    overrides: Sequence[tuple[Sequence[Any], str]] = (),
) -> str:
    """The whole report for a failed validation of `source`.

    `overrides` pairs each override's key path with its text, so an error caused by a `--set`
    says so instead of sending the reader to a file that does not contain the value.
    """
    lines: list[str] = []
    for raw in error.errors(include_url=False):
        path, line = describe_error(config_cls, raw)
        origins = [
            text
            for key_path, text in overrides
            if [str(p) for p in key_path] == [str(p) for p in path[: len(key_path)]]
        ]
        if origins:
            line += f" [set by override '{origins[-1]}']"
        if line not in lines:
            lines.append(line)
    count = f"{len(lines)} error{'s' if len(lines) != 1 else ''}"
    body = "\n".join(f"  - {line}" for line in lines)
    return f"Invalid config {source} ({count}):\n{body}"
