"""`TrainState`: where training stands (step, time trained, random generators), as a DCP `Stateful`."""
from __future__ import annotations

import pickle
import random
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from tml.common.device import get_rank, get_world_size
from tml.ml_logging.torch_logging import logging


def capture_rng_states() -> dict[str, Any]:
    """The states of every random generator a training step may draw from, on this process."""
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def apply_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        if len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
        else:
            logging.warning("CUDA generator states not restored: the device count differs", rank=-1)


@dataclass
class TrainState:
    """Progress of a training run, saved with every checkpoint.

    `step` counts COMPLETED training steps, so a run resumed from a checkpoint continues with step
    `step + 1` and checkpoint directories are named by it, whatever the world size.
    Random generator states are saved per rank and restored only when the world size is unchanged:
    with another number of ranks there is no meaningful mapping of one rank's stream to another's.
    """

    step: int = 0
    walltime: float = 0.0
    restore_rng: bool = True
    saved_world_size: Optional[int] = None

    def _rng_key(self) -> str:
        return f"rank{get_rank()}"

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "walltime": self.walltime,
            "world_size": get_world_size(),
            # One opaque blob per rank: DCP keeps a rank's own key, and the blob's inner layout (with
            # or without CUDA) never has to match between the saving and the loading machine.
            "rng": {self._rng_key(): pickle.dumps(capture_rng_states())},
        }

    def optional_checkpoint_paths(self) -> list[tuple[str, ...]]:
        """Entries a checkpoint may lack: this rank's generators when it was saved by fewer ranks."""
        return [("rng", self._rng_key())]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.step = int(state_dict["step"])
        self.walltime = float(state_dict["walltime"])
        self.saved_world_size = int(state_dict["world_size"])
        if not self.restore_rng:
            return
        blob = state_dict.get("rng", {}).get(self._rng_key())
        if blob is None or self.saved_world_size != get_world_size():
            logging.warning(
                f"random generator states not restored: the checkpoint was saved by "
                f"{self.saved_world_size} ranks, this run has {get_world_size()}"
            )
            return
        apply_rng_states(pickle.loads(blob))
