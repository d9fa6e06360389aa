import math

import pytest

from tml.core.optimizers import LearningRate, compute_lr


def _lr(**schedule) -> LearningRate:
    return LearningRate.model_validate(schedule)


@pytest.mark.parametrize("step", [0, 1, 10_000_000])
def test_constant_is_the_same_at_every_step(step):
    assert compute_lr(_lr(constant=0.3), step) == 0.3
    assert compute_lr(_lr(constant=0.0), step) == 0.0


@pytest.mark.parametrize(
    "step, expected",
    [(0, 1.0), (9, 1.0), (10, 0.5), (11, 0.5), (19, 0.5), (20, 0.1), (1000, 0.1)],
)
def test_piecewise_constant_switches_at_the_boundary_itself(step, expected):
    schedule = _lr(
        piecewise_constant={"learning_rate_boundaries": [10, 20], "learning_rate_values": [1.0, 0.5, 0.1]}
    )
    assert compute_lr(schedule, step) == expected


@pytest.mark.parametrize(
    "step, expected", [(0, 0.0), (1, 0.2), (2, 0.4), (3, 0.6), (4, 0.8), (5, 0.8), (1000, 0.8)]
)
def test_linear_ramp_to_constant(step, expected):
    schedule = _lr(linear_ramp_to_constant={"learning_rate": 0.8, "num_ramp_steps": 4})
    assert compute_lr(schedule, step) == pytest.approx(expected, rel=1e-12, abs=0)


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.0),  # warm-up starts at zero
        (5, 0.5),  # mid-ramp
        (10, 1.0),  # ramp end: cosine at angle 0
        (35, 0.1 + 0.45 * (1 + math.sqrt(0.5))),  # a quarter into the decay: angle pi/4
        (60, 0.55),  # middle of the decay: angle pi/2
        (110, 0.1),  # final step: angle pi
        (111, 0.1),  # after the final step
        (10**6, 0.1),
    ],
)
def test_linear_ramp_to_cosine(step, expected):
    schedule = _lr(
        linear_ramp_to_cosine={
            "learning_rate": 1.0,
            "final_learning_rate": 0.1,
            "num_ramp_steps": 10,
            "final_num_steps": 110,
        }
    )
    assert compute_lr(schedule, step) == pytest.approx(expected, rel=1e-12, abs=1e-15)
