import pytest
import torch

from tml.core.optimizers import OptimizerConfig, build_optimizer, get_optimizer_class


def _two_steps(config: OptimizerConfig) -> tuple[torch.optim.Optimizer, float]:
    """Two steps with gradient 2 from 0; the distance moved tells the algorithms apart."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer, scheduler = build_optimizer([param], config)
    for _ in range(2):
        optimizer.zero_grad()
        (2.0 * param.sum()).backward()
        optimizer.step()
        scheduler.step()
    return optimizer, param.item()


def test_sgd_with_momentum():
    optimizer, value = _two_steps(OptimizerConfig(sgd={"lr": 0.1, "momentum": 0.9}))
    assert type(optimizer) is torch.optim.SGD
    assert value == pytest.approx(-(0.1 * 2.0 + 0.1 * (0.9 * 2.0 + 2.0)))


def test_adagrad_with_its_eps():
    optimizer, value = _two_steps(OptimizerConfig(adagrad={"lr": 0.1, "eps": 0.5}))
    assert type(optimizer) is torch.optim.Adagrad
    assert value == pytest.approx(-(0.1 * 2.0 / (2.0 + 0.5) + 0.1 * 2.0 / (8.0**0.5 + 0.5)))


def test_adam_not_the_sgd_settings():
    # The original passed the sgd sub-config to whatever class it picked (bug B12).
    optimizer, value = _two_steps(OptimizerConfig(adam={"lr": 0.1, "betas": (0.5, 0.9), "eps": 1e-7}))
    assert type(optimizer) is torch.optim.Adam
    assert optimizer.param_groups[0]["betas"] == (0.5, 0.9)
    assert optimizer.param_groups[0]["eps"] == 1e-7
    assert value == pytest.approx(-0.2, rel=1e-5)  # Adam moves about lr per step on a constant gradient


def test_schedule_drives_the_built_optimizer():
    config = OptimizerConfig(
        sgd={"lr": 5.0},
        learning_rate={"linear_ramp_to_constant": {"learning_rate": 0.1, "num_ramp_steps": 2}},
    )
    optimizer, value = _two_steps(config)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # step 2
    assert value == pytest.approx(-(0.0 * 2.0 + 0.05 * 2.0))  # steps 0 and 1 used lr 0 and 0.05


def test_optimizer_class_per_algorithm():
    assert get_optimizer_class(OptimizerConfig(adam={"lr": 1.0})) is torch.optim.Adam
    assert get_optimizer_class(OptimizerConfig(sgd={"lr": 1.0})) is torch.optim.SGD
    assert get_optimizer_class(OptimizerConfig(adagrad={"lr": 1.0})) is torch.optim.Adagrad
