"""Optimizers built from configs, and `LRShim`, which drives each param group's lr by a schedule.

Param groups are named so that schedules can be given per name:
- a group dict's own "name" key wins (`torch.optim.Adam([{"params": ps, "name": "towers"}])`);
- otherwise the key under which the group's optimizer was added to a torchrec `CombinedOptimizer`
  (`CombinedOptimizer([("emb", dmp.fused_optimizer), ("dense", dense)])`); with nesting the
  outermost non-empty key counts, so all groups of DMP's fused optimizer share the caller's key.
Several groups may share a name, and then share its schedule.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch.optim.lr_scheduler import LRScheduler
from torchrec.optim.fused import FusedOptimizer

from tml.core.optimizers.config import (
    LearningRate,
    OptimizerConfig,
    chosen_algorithm,
    get_learning_rate,
    get_optimizer_algorithm_config,
)
from tml.core.optimizers.schedules import compute_lr
from tml.core.optimizers.tree import leaf_optimizers

LRConfigs = Union[Mapping[str, LearningRate], Sequence[LearningRate]]

_DENSE_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
}


def get_optimizer_class(optimizer_config: OptimizerConfig) -> type[torch.optim.Optimizer]:
    return _DENSE_CLASSES[chosen_algorithm(optimizer_config)]


def build_optimizer(
    params: Iterable[Any], optimizer_config: OptimizerConfig
) -> tuple[torch.optim.Optimizer, LRShim]:
    """The configured algorithm over `params` (tensors or group dicts), with every group following
    the config's schedule."""
    algorithm = get_optimizer_algorithm_config(optimizer_config)
    optimizer = get_optimizer_class(optimizer_config)(params, **algorithm.model_dump())
    schedule = get_learning_rate(optimizer_config)
    return optimizer, LRShim(optimizer, [schedule] * len(optimizer.param_groups))


def param_group_names(optimizer: torch.optim.Optimizer) -> list[Optional[str]]:
    """Each param group's name, in `optimizer.param_groups` order (None where it has none)."""
    keys = {id(group): key for key, leaf in leaf_optimizers(optimizer) for group in leaf.param_groups}
    return [group.get("name") or keys.get(id(group)) for group in optimizer.param_groups]


def apply_fused_lr_now(optimizer: torch.optim.Optimizer) -> None:
    """Push the current group lrs into every fused embedding kernel inside `optimizer`.

    A fused optimizer updates the embeddings during backward, with the lr its kernel holds; it copies
    its group's lr into the kernel only in step()/zero_grad(). An lr changed after optimizer.step()
    would therefore be used one step late. A fused optimizer's step() does nothing else.
    """
    for _, leaf in leaf_optimizers(optimizer):
        if isinstance(leaf, FusedOptimizer):
            leaf.step()


def _describe_groups(names: Sequence[Optional[str]], indices: Iterable[int]) -> str:
    return ", ".join(repr(names[i]) if names[i] else f"#{i} (unnamed)" for i in indices)


def _configs_in_group_order(
    names: Sequence[Optional[str]], lr_dict: LRConfigs
) -> list[LearningRate]:
    all_groups = _describe_groups(names, range(len(names)))
    if isinstance(lr_dict, Mapping):
        unknown = sorted(set(lr_dict) - {name for name in names if name})
        if unknown:
            raise ValueError(
                f"LR schedules are given for {unknown}, which name no param group; "
                f"the optimizer's param groups are: {all_groups}."
            )
        missing = [i for i, name in enumerate(names) if name not in lr_dict]
        if missing:
            raise ValueError(
                f"Param groups {_describe_groups(names, missing)} have no LR schedule "
                f"(schedules are given for {sorted(lr_dict)}). Name a group with a 'name' key in its "
                f"dict or by its key in a CombinedOptimizer."
            )
        return [lr_dict[name] for name in names]
    configs = list(lr_dict)
    if len(configs) != len(names):
        raise ValueError(
            f"{len(configs)} LR schedules given for {len(names)} param groups ({all_groups}); "
            f"a list needs one per group, in order."
        )
    return configs


def _set_lrs(optimizer: torch.optim.Optimizer, lrs: Sequence[float]) -> None:
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class LRShim(LRScheduler):
    """Sets every param group's lr to `compute_lr(its schedule, step)`.

    `lr_dict` maps group names (see the module docstring) to schedules, or lists one schedule per
    group in `optimizer.param_groups` order. Construction applies step 0; each `step()` advances one
    training step and also pushes the new lrs into fused embedding kernels, so they apply to the very
    next backward. Works over plain torch optimizers and torchrec keyed/combined optimizers.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, lr_dict: LRConfigs) -> None:
        self.group_names = param_group_names(optimizer)
        self.lr_configs = _configs_in_group_order(self.group_names, lr_dict)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [compute_lr(config, self.last_epoch) for config in self.lr_configs]

    def step(self, epoch: Optional[int] = None) -> None:
        """Advance one training step. Called every step, so it skips torch's generic bookkeeping."""
        if epoch is not None:
            raise ValueError("LRShim follows training steps; step() takes no epoch")
        self.last_epoch += 1
        self._step_count += 1
        lrs = self.get_lr()
        changed = [group["lr"] != lr for group, lr in zip(self.optimizer.param_groups, lrs)]
        if any(changed):
            _set_lrs(self.optimizer, lrs)
            # Syncing fused kernels costs a pass over every table; constant stretches need none.
            apply_fused_lr_now(self.optimizer)
        self._last_lr = lrs

    def state_dict(self) -> dict[str, Any]:
        # The schedules come from the config; only the position on them is state.
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Resume at the saved step and apply its lrs at once (keyed optimizers do not save lrs)."""
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict["_step_count"])
        _set_lrs(self.optimizer, self.get_lr())
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        apply_fused_lr_now(self.optimizer)
