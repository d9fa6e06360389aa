"""Job modes as the data pipeline sees them.

The recap config's `JobMode` is a `(str, Enum)` with these values; the pipeline compares values so it
accepts that enum or a plain string without importing the full recap config (which imports ours).
"""
from __future__ import annotations

from typing import Any

TRAIN = "train"
EVALUATE = "evaluate"
INFERENCE = "inference"
MODES = (TRAIN, EVALUATE, INFERENCE)


def mode_name(mode: Any) -> str:
    value = getattr(mode, "value", mode)
    if value not in MODES:
        raise ValueError(f"unknown job mode {mode!r}; expected one of {MODES}")
    return str(value)
