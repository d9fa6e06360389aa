"""Config field descriptions say what a field does; measured figures go stale there and belong in
`bench/` and the READMEs."""
import re
import typing

from tml.core.config import BaseConfig
from tml.projects.home.recap.config import RecapConfig
from tml.projects.twhin.config import TwhinConfig

FIGURE = re.compile(r"[+-]?\d+(\.\d+)?\s*%|\bmeasured\b", re.IGNORECASE)


def config_classes(root: type, seen: set) -> None:
    if root in seen:
        return
    seen.add(root)
    for field in root.model_fields.values():
        pending = [field.annotation]
        while pending:
            annotation = pending.pop()
            if isinstance(annotation, type) and issubclass(annotation, BaseConfig):
                config_classes(annotation, seen)
            pending.extend(typing.get_args(annotation))


def test_no_field_description_carries_a_measured_figure():
    classes: set = set()
    for root in (RecapConfig, TwhinConfig):
        config_classes(root, classes)
    assert len(classes) > 30
    offending = [
        f"{cls.__name__}.{name}: {field.description}"
        for cls in classes
        for name, field in cls.model_fields.items()
        if field.description and FIGURE.search(field.description)
    ]
    assert offending == []
