import pytest
import torch
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper

from tml.core.optimizers import LearningRate, LRShim, param_group_names

CONSTANT = LearningRate(constant=0.5)
RAMP = LearningRate(linear_ramp_to_constant={"learning_rate": 1.0, "num_ramp_steps": 2})


def _param(value: float = 0.0) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor([value]))


def _train_step(optimizer: torch.optim.Optimizer, params, grad: float = 1.0) -> None:
    optimizer.zero_grad()
    sum(p.sum() * grad for p in params).backward()
    optimizer.step()


def _lrs(optimizer) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


def test_named_groups_of_a_plain_optimizer_follow_their_own_schedules():
    a, b = _param(), _param()
    optimizer = torch.optim.SGD([{"params": [a], "name": "a"}, {"params": [b], "name": "b"}], lr=123.0)
    shim = LRShim(optimizer, {"b": RAMP, "a": CONSTANT})
    assert _lrs(optimizer) == [0.5, 0.0]  # step 0 applied at construction

    _train_step(optimizer, [a, b])  # trained with lrs at step 0: b must not move
    assert (a.item(), b.item()) == (-0.5, 0.0)
    shim.step()
    assert _lrs(optimizer) == [0.5, 0.5]
    assert shim.get_last_lr() == [0.5, 0.5]

    _train_step(optimizer, [a, b])
    assert (a.item(), b.item()) == (-1.0, -0.5)
    shim.step()
    shim.step()
    assert _lrs(optimizer) == [0.5, 1.0]


def test_list_of_schedules_in_group_order():
    optimizer = torch.optim.SGD([{"params": [_param()]}, {"params": [_param()]}], lr=1.0)
    LRShim(optimizer, [RAMP, CONSTANT])
    assert _lrs(optimizer) == [0.0, 0.5]


def test_a_schedule_for_a_group_that_does_not_exist_is_an_error():
    optimizer = torch.optim.SGD([{"params": [_param()], "name": "a"}, {"params": [_param()]}], lr=1.0)
    with pytest.raises(
        ValueError,
        match=r"LR schedules are given for \['c'\], which name no param group; "
        r"the optimizer's param groups are: 'a', #1 \(unnamed\)\.",
    ):
        LRShim(optimizer, {"a": CONSTANT, "c": CONSTANT})


def test_a_group_without_a_schedule_is_an_error():
    optimizer = torch.optim.SGD(
        [{"params": [_param()], "name": "a"}, {"params": [_param()], "name": "b"}, {"params": [_param()]}],
        lr=1.0,
    )
    with pytest.raises(
        ValueError,
        match=r"Param groups 'b', #2 \(unnamed\) have no LR schedule \(schedules are given for \['a'\]\)",
    ):
        LRShim(optimizer, {"a": CONSTANT})


def test_a_list_of_the_wrong_length_is_an_error():
    optimizer = torch.optim.SGD([{"params": [_param()], "name": "a"}], lr=1.0)
    with pytest.raises(ValueError, match=r"2 LR schedules given for 1 param groups \('a'\)"):
        LRShim(optimizer, [CONSTANT, RAMP])


def _keyed_sgd(param: torch.nn.Parameter, name: str) -> KeyedOptimizerWrapper:
    return KeyedOptimizerWrapper({name: param}, lambda params: torch.optim.SGD(params, lr=123.0))


def test_combined_optimizer_groups_are_named_by_their_keys():
    towers, backbone = _param(), _param()
    optimizer = CombinedOptimizer(
        [("towers", _keyed_sgd(towers, "w")), ("backbone", _keyed_sgd(backbone, "w"))]
    )
    assert param_group_names(optimizer) == ["towers", "backbone"]

    shim = LRShim(optimizer, {"towers": RAMP, "backbone": CONSTANT})
    assert _lrs(optimizer) == [0.0, 0.5]
    _train_step(optimizer, [towers, backbone], grad=2.0)
    assert (towers.item(), backbone.item()) == (0.0, -1.0)
    shim.step()
    _train_step(optimizer, [towers, backbone], grad=2.0)
    assert (towers.item(), backbone.item()) == (-1.0, -2.0)


def test_outermost_key_names_nested_groups_and_an_explicit_name_wins():
    inner = CombinedOptimizer([("inner", _keyed_sgd(_param(), "w"))])
    named = KeyedOptimizerWrapper(
        {"v": _param()}, lambda params: torch.optim.SGD([{"params": params, "name": "explicit"}], lr=1.0)
    )
    unkeyed = _keyed_sgd(_param(), "u")
    optimizer = CombinedOptimizer([("outer", inner), ("ignored", named), unkeyed])
    assert param_group_names(optimizer) == ["outer", "explicit", None]


def test_resuming_applies_the_saved_step_at_once():
    optimizer = torch.optim.SGD([_param()], lr=1.0)
    shim = LRShim(optimizer, [RAMP])
    optimizer.step()
    shim.step()
    saved = shim.state_dict()
    assert saved == {"last_epoch": 1, "_step_count": 2}

    fresh_optimizer = torch.optim.SGD([_param()], lr=1.0)
    fresh = LRShim(fresh_optimizer, [RAMP])
    assert _lrs(fresh_optimizer) == [0.0]
    fresh.load_state_dict(saved)
    assert _lrs(fresh_optimizer) == [0.5]
    fresh_optimizer.step()
    fresh.step()
    assert _lrs(fresh_optimizer) == [1.0]
