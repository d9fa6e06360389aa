"""Names of the loss functions a config can ask for."""
from __future__ import annotations

from enum import Enum


class LossType(str, Enum):
    """A `str` enum so YAML values ("bce_with_logits") validate and serialise as plain strings."""

    CROSS_ENTROPY = "cross_entropy"
    BCE_WITH_LOGITS = "bce_with_logits"
