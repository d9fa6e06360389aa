"""What a job does with its data: the one job-mode type of the package (the original's `JobMode`)."""
from __future__ import annotations

import enum


class JobMode(str, enum.Enum):
    """A `str` enum, so plain strings ("train") compare equal and convert with `JobMode(value)`."""

    TRAIN = "train"
    EVALUATE = "evaluate"
    INFERENCE = "inference"
