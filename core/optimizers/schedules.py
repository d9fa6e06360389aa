"""Learning rate as a function of the step, with the original's formulas (checkpointed runs
resume on the same curve, so these must not drift)."""
from __future__ import annotations

import bisect
import math

from tml.core.optimizers.config import LearningRate


def compute_lr(lr_config: LearningRate, step: int) -> float:
    if lr_config.constant is not None:
        return lr_config.constant

    if lr_config.piecewise_constant is not None:
        piecewise = lr_config.piecewise_constant
        # bisect_right: at exactly a boundary the next value already applies.
        index = bisect.bisect_right(piecewise.learning_rate_boundaries, step)
        return piecewise.learning_rate_values[index]

    if lr_config.linear_ramp_to_constant is not None:
        ramp = lr_config.linear_ramp_to_constant
        return min(ramp.learning_rate, ramp.learning_rate / ramp.num_ramp_steps * step)

    if lr_config.linear_ramp_to_cosine is not None:
        cosine = lr_config.linear_ramp_to_cosine
        if step < cosine.num_ramp_steps:
            return cosine.learning_rate * step / cosine.num_ramp_steps
        if step <= cosine.final_num_steps:
            decay_steps = cosine.final_num_steps - cosine.num_ramp_steps
            angle = math.pi * (step - cosine.num_ramp_steps) / decay_steps
            amplitude = cosine.learning_rate - cosine.final_learning_rate
            return cosine.final_learning_rate + amplitude * 0.5 * (1.0 + math.cos(angle))
        return cosine.final_learning_rate

    raise ValueError(f"No learning rate schedule is set in {lr_config!r}.")
