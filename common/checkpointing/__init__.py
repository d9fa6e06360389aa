"""Checkpoints with torch.distributed.checkpoint: crash-safe, reshardable, on local or fsspec paths."""
from tml.common.checkpointing.checkpoint_io import (
    CheckpointMismatchError,
    ensure_optimizer_state,
    load_model_weights,
    read_metadata,
    restore,
    save_state,
    save_state_async,
)
from tml.common.checkpointing.layout import (
    checkpoints_iterator,
    get_checkpoint,
    get_checkpoints,
    is_done_eval,
    mark_done_eval,
    resolve_checkpoint,
    step_from_checkpoint,
    wait_for_evaluators,
)
from tml.common.checkpointing.manager import CheckpointManager
from tml.common.checkpointing.train_state import TrainState

__all__ = [
    "CheckpointManager",
    "CheckpointMismatchError",
    "TrainState",
    "checkpoints_iterator",
    "ensure_optimizer_state",
    "get_checkpoint",
    "get_checkpoints",
    "is_done_eval",
    "load_model_weights",
    "mark_done_eval",
    "read_metadata",
    "resolve_checkpoint",
    "restore",
    "save_state",
    "save_state_async",
    "step_from_checkpoint",
    "wait_for_evaluators",
]
