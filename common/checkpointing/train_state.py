"""`TrainState`: where training stands (step, time trained, random generators), as a DCP `Stateful`.

Everything is saved as tensors. DCP stores any other value with `torch.save` and reads it back with
`torch.load(weights_only=False)`, i.e. unpickles it: tml keeps none of its own state that way.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from tml.common.device import get_rank, get_world_size
from tml.ml_logging.torch_logging import logging

_PYTHON_STATE, _PYTHON_GAUSS = "python_state", "python_gauss"
_NUMPY_KEYS, _NUMPY_POS, _NUMPY_GAUSS = "numpy_keys", "numpy_pos_has_gauss", "numpy_gauss"
_TORCH = "torch"
_CUDA_COUNT = "cuda_count"


def _cuda_key(index: int) -> str:
    return f"cuda{index}"


def capture_rng_states() -> dict[str, torch.Tensor]:
    """The states of every random generator a training step may draw from, on this process, as
    tensors of fixed shapes (CUDA generators one entry per device)."""
    version, python_state, gauss_next = random.getstate()
    if version != 3:
        raise RuntimeError(f"unexpected Python random state version {version}")
    kind, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    if kind != "MT19937":
        raise RuntimeError(f"unexpected numpy random state kind {kind}")
    states = {
        _PYTHON_STATE: torch.tensor(python_state, dtype=torch.int64),
        _PYTHON_GAUSS: torch.tensor([math.nan if gauss_next is None else gauss_next], dtype=torch.float64),
        _NUMPY_KEYS: torch.from_numpy(keys.astype(np.int64)),
        _NUMPY_POS: torch.tensor([pos, has_gauss], dtype=torch.int64),
        _NUMPY_GAUSS: torch.tensor([cached_gaussian], dtype=torch.float64),
        _TORCH: torch.get_rng_state(),
        _CUDA_COUNT: torch.tensor([torch.cuda.device_count() if torch.cuda.is_available() else 0]),
    }
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[_cuda_key(index)] = state
    return states


def apply_rng_states(states: dict[str, torch.Tensor]) -> None:
    gauss = float(states[_PYTHON_GAUSS][0])
    random.setstate((3, tuple(int(v) for v in states[_PYTHON_STATE].tolist()), None if math.isnan(gauss) else gauss))
    pos, has_gauss = (int(v) for v in states[_NUMPY_POS].tolist())
    keys = states[_NUMPY_KEYS].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, pos, has_gauss, float(states[_NUMPY_GAUSS][0])))
    torch.set_rng_state(states[_TORCH])
    saved_cuda = int(states[_CUDA_COUNT][0]) if _CUDA_COUNT in states else 0
    if saved_cuda and torch.cuda.is_available():
        if saved_cuda == torch.cuda.device_count() and all(_cuda_key(i) in states for i in range(saved_cuda)):
            torch.cuda.set_rng_state_all([states[_cuda_key(i)] for i in range(saved_cuda)])
        else:
            logging.warning("CUDA generator states not restored: the device count differs", rank=-1)


def _scalar(value: Any) -> float:
    return value.item() if isinstance(value, torch.Tensor) else value


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
            "step": torch.tensor(self.step, dtype=torch.int64),
            "walltime": torch.tensor(self.walltime, dtype=torch.float64),
            "world_size": torch.tensor(get_world_size(), dtype=torch.int64),
            # DCP keeps a rank's own key; CUDA entries exist only where there are GPUs (optional).
            "rng": {self._rng_key(): capture_rng_states()},
        }

    def optional_checkpoint_paths(self) -> list[tuple[str, ...]]:
        """Entries a checkpoint may lack: this rank's generators when it was saved by fewer ranks
        (or by a tml that stored them otherwise), and CUDA generators saved without GPUs."""
        return [("rng", self._rng_key(), name) for name in capture_rng_states()]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.step = int(_scalar(state_dict["step"]))
        self.walltime = float(_scalar(state_dict["walltime"]))
        self.saved_world_size = int(_scalar(state_dict["world_size"]))
        if not self.restore_rng:
            return
        states = state_dict.get("rng", {}).get(self._rng_key(), {})
        if self.saved_world_size != get_world_size() or _TORCH not in states:
            logging.warning(
                f"random generator states not restored: the checkpoint was saved by "
                f"{self.saved_world_size} ranks, this run has {get_world_size()}"
            )
            return
        apply_rng_states(states)
