"""Scalars that summarise a model's weights for training logs, on any device and any sharding."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Optional, Union

import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torch.distributed.tensor import DTensor
from torchrec.distributed.composable.table_batched_embedding_slice import TableBatchedEmbeddingSlice

WeightFn = Callable[[torch.Tensor], Any]

# Prefixes that wrappers (DMP, DDP) add to parameter names; logs use the model's own names.
_WRAPPER_PREFIXES = ("_dmp_wrapped_module.", "module.")
_NO_SHARD = -1.0
# How sharded tables show up among a sharded model's parameters: pieces, not whole tables.
_TABLE_PIECES = (ShardedTensor, DTensor, TableBatchedEmbeddingSlice)


def _model_name(name: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, stripped = name[len(prefix):], True
    return name


def _to_float(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().cpu().item())
    return float(value)


def _sharded_names(model: torch.nn.Module) -> set[str]:
    """Parameters that are sharded tables: a sharded model's parameters show only local pieces of them
    (sometimes as plain Parameters), while its state dict shows them whole."""
    return {
        _model_name(name)
        for name, value in model.state_dict().items()
        if isinstance(value, (ShardedTensor, DTensor))
    }


def weights_to_log(
    model: torch.nn.Module, how_to_log: Optional[Union[WeightFn, Mapping[str, WeightFn]]] = None
) -> dict[str, float]:
    """`{"model/<fn name>/<param name>": fn(param)}`: fn applied to every dense parameter, or only to
    the parameters named in a `{param name: fn}` mapping. `fn` must return a scalar.

    Sharded embedding tables are skipped (their local pieces are not the table): use `log_ebc_norms`.
    """
    if how_to_log is None:
        return {}
    values: dict[str, float] = {}
    sharded = _sharded_names(model)
    with torch.no_grad():
        for raw_name, param in model.named_parameters():
            name = _model_name(raw_name)
            fn = how_to_log.get(name) if isinstance(how_to_log, Mapping) else how_to_log
            if fn is None or name in sharded or isinstance(param, _TABLE_PIECES):
                continue
            values[f"model/{fn.__name__}/{name}"] = _to_float(fn(param.detach()))
    if isinstance(how_to_log, Mapping):
        unknown = sorted(set(how_to_log) - {name.split("/", 2)[2] for name in values})
        if unknown:
            raise KeyError(f"weights_to_log: no dense parameters named {unknown} in the model")
    return values


def _local_pieces(weight: Any) -> list[torch.Tensor]:
    if isinstance(weight, ShardedTensor):
        return [shard.tensor for shard in weight.local_shards()]
    if isinstance(weight, DTensor):
        return [weight.to_local()]
    return [weight]


def _resolve_key(model_state_dict: Mapping[str, Any], key: str) -> str:
    """A state-dict key as given, or the weight of the table named `key`."""
    if key in model_state_dict:
        return key
    matches = [name for name in model_state_dict if name.endswith(f".{key}.weight")]
    if len(matches) == 1:
        return matches[0]
    tables = sorted(name for name in model_state_dict if "embedding_bags." in name or "embeddings." in name)
    raise KeyError(
        f"log_ebc_norms: '{key}' is neither a state-dict key nor the name of one table "
        f"({len(matches)} matches); embedding weights: {tables}"
    )


def _mean_row_norm(pieces: list[torch.Tensor], sample_size: int, generator: torch.Generator) -> float:
    """Mean L2 norm of up to `sample_size` rows drawn without replacement from all local pieces."""
    counts = [piece.shape[0] for piece in pieces]
    total = sum(counts)
    chosen = torch.randperm(total, generator=generator)[:sample_size] if total > sample_size else None
    norms, offset = [], 0
    for piece, count in zip(pieces, counts):
        rows = piece.detach().reshape(count, -1)
        if chosen is not None:
            inside = chosen[(chosen >= offset) & (chosen < offset + count)] - offset
            rows = rows[inside.to(rows.device)]
        norms.append(rows.float().norm(dim=1))
        offset += count
    return float(torch.cat(norms).mean().cpu())


def log_ebc_norms(
    model_state_dict: Mapping[str, Any], ebc_keys: Iterable[str], sample_size: int = 4_000_000
) -> dict[str, float]:
    """`{"<key>-norm-<rank>": mean row norm of that rank's rows of the table}` for each key.

    (With column-wise sharding a rank holds a slice of each row, and the norm is that slice's.)

    Keys are state-dict keys of embedding weights, or table names. A rank holding no rows of a table
    is left out. With a process group, all ranks must call this (the per-rank values are gathered);
    sampling uses its own generator, so the training random streams are not disturbed.
    """
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    generator = torch.Generator().manual_seed(rank)
    logs: dict[str, float] = {}
    for key in ebc_keys:
        weight = model_state_dict[_resolve_key(model_state_dict, key)]
        pieces = [piece for piece in _local_pieces(weight) if piece.numel() > 0]
        with torch.no_grad():
            local = _mean_row_norm(pieces, sample_size, generator) if pieces else _NO_SHARD
        if distributed:
            device = _collective_device()
            gathered = [torch.zeros(1, device=device) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, torch.tensor([local], device=device))
            per_rank = [value.item() for value in gathered]
        else:
            per_rank = [local]
        for index, norm in enumerate(per_rank):
            if norm != _NO_SHARD:
                logs[f"{key}-norm-{index}"] = norm
    return logs


def _collective_device() -> torch.device:
    """The device the default group's backend communicates on."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
