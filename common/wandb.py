"""Weights & Biases settings (the original defines them but never logs to wandb)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import pydantic

from tml.core.config.base_config import BaseConfig


class WandbConfig(BaseConfig):
    host: Optional[str] = pydantic.Field(
        None, description="wandb server URL; None uses wandb's own default (or WANDB_BASE_URL)."
    )
    key_path: str = pydantic.Field(..., description="Path of a file holding the wandb API key.")
    name: Optional[str] = pydantic.Field(None, description="Run name shown in the wandb UI.")
    entity: Optional[str] = pydantic.Field(None, description="wandb user or team that owns the run.")
    project: Optional[str] = pydantic.Field(None, description="wandb project the run is logged to.")
    tags: List[str] = pydantic.Field(default_factory=list, description="Tags attached to the run.")
    notes: Optional[str] = pydantic.Field(None, description="Free-text description of the run.")
    metadata: Optional[Dict[str, Any]] = pydantic.Field(
        None, description="Extra key/values stored in the run's config."
    )
