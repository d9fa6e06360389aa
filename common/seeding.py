"""One seed for the random streams a training run draws from, so that a run can be repeated.

Data order is seeded by the data pipelines themselves (explicit numpy generators); what is left is
torch's global generator, which draws the initial weights, dropout masks and any other random op of
the model. Python's `random` is seeded too for code that uses it.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def derived_seed(seed: int, *salt: int) -> int:
    """A 63-bit seed mixed from `seed` and `salt` (e.g. the rank), well apart for nearby inputs."""
    state = np.random.SeedSequence([seed, *salt]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def seed_torch(seed: int, *salt: int) -> int:
    """Seed torch's CPU and CUDA generators and Python's `random` from (seed, *salt); returns the value.

    Call it with the same arguments on every rank before building the model (replicated parameters
    must start equal), and with the rank as salt afterwards (each rank's dropout differs).
    """
    value = derived_seed(seed, *salt)
    torch.manual_seed(value)  # all devices' default generators
    random.seed(value)
    return value
