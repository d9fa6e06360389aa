"""The base of every tml config: strict fields plus the original's field-group rules.

Field groups are declared on the field itself, as in the original::

    class LearningRate(BaseConfig):
        constant: Optional[float] = Field(None, json_schema_extra={"one_of": "lr"})
        piecewise_constant: Optional[PiecewiseConstant] = Field(None, json_schema_extra={"one_of": "lr"})

`one_of` means exactly one field of the group is set (not None); `at_most_one_of` means zero or one.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, ClassVar

import pydantic
import yaml

GROUP_KINDS = ("one_of", "at_most_one_of")


def _field_groups(config_cls: type[pydantic.BaseModel], kind: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for name, field in config_cls.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and kind in extra:
            groups[str(extra[kind])].append(name)
    return dict(groups)


def _describe_set(names: list[str]) -> str:
    return f"got {', '.join(names)}" if names else "none is set"


class BaseConfig(pydantic.BaseModel):
    """Unknown fields are errors, so a typo in a YAML file can never be silently ignored."""

    model_config = pydantic.ConfigDict(extra="forbid", validate_default=False, protected_namespaces=())

    _group_cache: ClassVar[dict[tuple[type, str], dict[str, list[str]]]] = {}

    @classmethod
    def field_groups(cls, kind: str) -> dict[str, list[str]]:
        """Field names per group for `kind` in GROUP_KINDS, computed once per class."""
        key = (cls, kind)
        if key not in BaseConfig._group_cache:
            BaseConfig._group_cache[key] = _field_groups(cls, kind)
        return BaseConfig._group_cache[key]

    @pydantic.model_validator(mode="after")
    def _check_field_groups(self) -> "BaseConfig":
        for group, names in self.field_groups("one_of").items():
            set_names = [name for name in names if getattr(self, name) is not None]
            if len(set_names) != 1:
                raise ValueError(
                    f"Exactly one of {','.join(names)} required (field group '{group}'); "
                    f"{_describe_set(set_names)}."
                )
        for group, names in self.field_groups("at_most_one_of").items():
            set_names = [name for name in names if getattr(self, name) is not None]
            if len(set_names) > 1:
                raise ValueError(
                    f"At most one of {','.join(names)} can be set (field group '{group}'); "
                    f"{_describe_set(set_names)}."
                )
        return self

    def to_plain(self) -> dict[str, Any]:
        """A dict of plain YAML/JSON types (enums as their values)."""
        return self.model_dump(mode="json")

    def pretty_print(self) -> str:
        """The config as YAML, in field order, loadable back by `load_config_from_yaml`."""
        return yaml.safe_dump(self.to_plain(), sort_keys=False, default_flow_style=False)
