"""Writing and reading one checkpoint directory with torch.distributed.checkpoint (DCP).

DCP stores every tensor with its global shape and reads back only the pieces each rank needs, so a
checkpoint loads into any world size and any sharding plan, and into a plain unsharded module.
"""
from __future__ import annotations

import warnings
from concurrent.futures import Future
from typing import Any, Mapping, MutableMapping, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.checkpoint._fsspec_filesystem import FsspecReader, FsspecWriter
from torch.distributed.checkpoint._nested_dict import flatten_state_dict
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import Metadata, TensorStorageMetadata
from torch.distributed.checkpoint.stateful import Stateful
from torch.distributed.tensor import DTensor
from torchrec.optim.fused import FusedOptimizer
from torch.optim.lr_scheduler import LRScheduler
from torchrec.optim.keyed import KeyedOptimizer

from tml.common.filesystem import infer_fs, is_local_fs, strip_protocol
from tml.core.optimizers import apply_fused_lr_now, leaf_optimizers

_NO_DIST_WARNING = ".*torch.distributed is disabled, unavailable or uninitialized.*"


class CheckpointMismatchError(ValueError):
    """The checkpoint does not hold what the state to restore needs (missing entries, other shapes)."""


def _is_distributed(no_dist: bool) -> bool:
    return not no_dist and dist.is_available() and dist.is_initialized()


def storage_writer(path: str) -> dcp.StorageWriter:
    fs = infer_fs(path)
    if is_local_fs(fs):
        return dcp.FileSystemWriter(strip_protocol(path))
    return FsspecWriter(path)


def storage_reader(path: str) -> dcp.StorageReader:
    fs = infer_fs(path)
    if is_local_fs(fs):
        return dcp.FileSystemReader(strip_protocol(path))
    return FsspecReader(path)


def read_metadata(path: str) -> Metadata:
    """The checkpoint's table of contents: every entry's key and, for tensors, global shape."""
    try:
        return storage_reader(path).read_metadata()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"no checkpoint at {path}: its DCP .metadata file is missing") from error


def save_state(path: str, state: Mapping[str, Any], no_dist: bool = False) -> None:
    """Write `state` (Stateful objects and plain values) to the checkpoint directory `path`; all
    ranks of the default group must call it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_DIST_WARNING)
        dcp.save(dict(state), storage_writer=storage_writer(path), no_dist=not _is_distributed(no_dist))


def save_state_async(
    path: str, state: Mapping[str, Any], process_group: Optional[dist.ProcessGroup] = None, no_dist: bool = False
) -> "Future[Any]":
    """`save_state` that returns once the state is copied to host memory and writes it in a background
    thread; the future completes when the files are written. Training may change the state right
    away. With several ranks, `process_group` must be a group used by nothing else meanwhile (the
    writer thread's collectives would otherwise interleave with the training step's)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_DIST_WARNING)
        warnings.filterwarnings("ignore", message=".*async_save.*experimental.*")
        return dcp.async_save(
            dict(state), storage_writer=storage_writer(path), process_group=process_group,
            no_dist=not _is_distributed(no_dist),
        )


# ---------------------------------------------------------------------------------------- optimizers


def _trainable_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    if isinstance(optimizer, KeyedOptimizer):
        return [param for param in optimizer.params.values() if param.requires_grad]
    return [param for group in optimizer.param_groups for param in group["params"] if param.requires_grad]


def _zero_lr_step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """One step with zero gradients at lr 0: creates lazy state, leaves the parameters unchanged
    (weight decay is scaled by the lr in every torch optimizer)."""
    saved_lrs = [group["lr"] for group in optimizer.param_groups]
    saved_grads = [param.grad for param in params]
    for group in optimizer.param_groups:
        group["lr"] = torch.zeros_like(group["lr"]) if isinstance(group["lr"], torch.Tensor) else 0.0
    try:
        for param in params:
            param.grad = torch.zeros_like(param)
        optimizer.step()
    finally:
        for group, lr in zip(optimizer.param_groups, saved_lrs):
            group["lr"] = lr
        for param, grad in zip(params, saved_grads):
            param.grad = grad


def ensure_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the lazily-initialised state (Adam's moments, ...) of every dense optimizer inside
    `optimizer`, so that a checkpoint can be loaded into it in place.

    Fused embedding optimizers always have their state. The parameters do not change.
    """
    for _, leaf in leaf_optimizers(optimizer):
        if isinstance(leaf, FusedOptimizer):
            continue
        params = _trainable_params(leaf)
        if any(param not in leaf.state for param in params):
            _zero_lr_step(leaf, params)


# ------------------------------------------------------------------------------------------- restore


def _global_shape(value: Any) -> Optional[tuple[int, ...]]:
    if isinstance(value, (ShardedTensor, DTensor, torch.Tensor)):
        return tuple(value.shape)
    return None


def _fit_problems(flat_state: Mapping[str, Any], metadata: Metadata) -> list[str]:
    entries = metadata.state_dict_metadata
    problems = []
    for key, value in flat_state.items():
        if key not in entries:
            problems.append(f"'{key}' is missing from the checkpoint")
            continue
        here = _global_shape(value)
        stored = entries[key]
        if here is None:
            continue
        if not isinstance(stored, TensorStorageMetadata):
            problems.append(f"'{key}' is a tensor of shape {here} here but not a tensor in the checkpoint")
        elif tuple(stored.size) != here:
            problems.append(
                f"tensor '{key}' has shape {tuple(stored.size)} in the checkpoint but {here} here"
            )
    return problems


def _all_problems(local: list[str], distributed: bool) -> list[str]:
    """Every rank's problems, so that all ranks raise together instead of some waiting in a load."""
    if not distributed:
        return local
    gathered: list[Optional[list[str]]] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    merged: list[str] = []
    for rank_problems in gathered:
        for problem in rank_problems or []:
            if problem not in merged:
                merged.append(problem)
    return merged


def _template_from_checkpoint(key: str, metadata: Metadata) -> Any:
    """The structure a plain value was saved with (nested dicts/lists, tensors of the saved shapes),
    rebuilt from the checkpoint's flattening map, so that callers need not know it in advance."""
    paths = metadata.planner_data if isinstance(metadata.planner_data, dict) else {}
    nested: dict[str, Any] = {}
    for flat_key, path in paths.items():
        if path[0] != key:
            continue
        stored = metadata.state_dict_metadata[flat_key]
        leaf = None
        if isinstance(stored, TensorStorageMetadata):
            leaf = torch.empty(stored.size, dtype=stored.properties.dtype)
        set_element(nested, path, leaf)
    return nested.get(key)


def _drop_absent_optional_entries(
    prepared: dict[str, Any], state: Mapping[str, Any], metadata: Metadata
) -> None:
    for key, value in state.items():
        optional_paths = getattr(value, "optional_checkpoint_paths", None)
        if optional_paths is None:
            continue
        for path in optional_paths():
            if ".".join((key, *path)) in metadata.state_dict_metadata:
                continue
            parent = prepared[key]
            for name in path[:-1]:
                parent = parent.get(name, {})
            parent.pop(path[-1], None)


def _holds_nothing(value: Any) -> bool:
    """A state dict of empty mappings only, e.g. the optimizer of a rank whose parameters have no
    optimizer state here (SGD, or every table placed on other ranks): there is nothing to load, and
    DCP would look for the empty mapping itself in the checkpoint."""
    return isinstance(value, Mapping) and all(_holds_nothing(item) for item in value.values())


def restore(path: str, state: MutableMapping[str, Any], no_dist: bool = False) -> None:
    """Load the checkpoint at `path` into `state` in place.

    Values with `state_dict()`/`load_state_dict()` (modules, optimizers, schedulers, GradScaler,
    TrainState) are loaded into; plain values are replaced by the saved ones (any placeholder, such
    as None, will do). Only the entries of `state` are read, so a subset (e.g. only "model") may be
    restored. Every tensor is checked against the checkpoint first: a missing entry or another shape
    raises CheckpointMismatchError naming it, on all ranks. Lazily created optimizer state is
    created first, and restored LR schedulers put their lrs back into their optimizers.
    With a process group, all ranks of the default group must call this (unless `no_dist`).
    """
    metadata = read_metadata(path)
    distributed = _is_distributed(no_dist)
    prepared: dict[str, Any] = {}
    for key, value in state.items():
        if isinstance(value, torch.optim.Optimizer):
            ensure_optimizer_state(value)
        if isinstance(value, Stateful):
            prepared[key] = value.state_dict()
        else:
            template = _template_from_checkpoint(key, metadata)
            prepared[key] = value if template is None else template
    _drop_absent_optional_entries(prepared, state, metadata)
    flat_state, _ = flatten_state_dict(prepared)
    problems = _all_problems(_fit_problems(flat_state, metadata), distributed)
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint {path} does not fit the state to restore:\n  " + "\n  ".join(problems)
        )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NO_DIST_WARNING)
        loadable = {
            key: value for key, value in prepared.items()
            if not (isinstance(state[key], Stateful) and _holds_nothing(value))
        }
        dcp.load(loadable, storage_reader=storage_reader(path), no_dist=not distributed)
    prepared.update(loadable)  # DCP replaces plain (non-tensor) values in the dict it was given
    for key, value in state.items():
        if isinstance(value, Stateful):
            if not _holds_nothing(prepared[key]):  # e.g. a disabled GradScaler has no state, and refuses an empty one
                value.load_state_dict(prepared[key])
        else:
            state[key] = prepared[key]
    for value in state.values():
        if isinstance(value, LRScheduler):
            _apply_scheduler_lrs(value)


def _apply_scheduler_lrs(scheduler: LRScheduler) -> None:
    """Put a restored scheduler's last lrs back into its optimizer.

    torchrec's keyed optimizers do not save param groups, so after a restore their lrs are the
    initial ones, and a chainable scheduler (StepLR, ...) would go on from the wrong values. The
    fused embedding kernels get the lrs at once too (they otherwise see them one step late).
    """
    last_lrs = getattr(scheduler, "_last_lr", None)
    groups = scheduler.optimizer.param_groups
    if not last_lrs or len(last_lrs) != len(groups):
        return
    for group, lr in zip(groups, last_lrs):
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
    apply_fused_lr_now(scheduler.optimizer)


def _has_distributed_tensors(module: torch.nn.Module) -> bool:
    return any(isinstance(value, (ShardedTensor, DTensor)) for value in module.state_dict().values())


def load_model_weights(module: torch.nn.Module, checkpoint_path: str, key: str = "model") -> None:
    """Load the model part of a checkpoint into `module`, whatever plan or world size saved it.

    A plain (unsharded) module is loaded by this process alone, with or without a process group, for
    evaluation and export. A sharded (DMP) module is loaded collectively: all ranks must call this.
    """
    restore(checkpoint_path, {key: module}, no_dist=not _has_distributed_tensors(module))
