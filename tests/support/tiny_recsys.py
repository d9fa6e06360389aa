"""A tiny embedding + MLP model, its data and training helpers, shared by sharding/checkpoint tests."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.common.modules.embedding import LargeEmbeddings, LargeEmbeddingsConfig
from tml.common.sharding import TableShardingConfig, maybe_shard_model, quiet_torchrec_warnings
from tml.core.optimizers import DenseGroup, LearningRate, apply_embedding_optimizers, build_combined_optimizer, dense_parameters

TABLES = ["t0", "t1", "t2", "t3"]
NUM_ROWS = 16
DIM = 8
BATCH = 6


def tiny_config(optimizer: Optional[dict] = None, num_rows: int = NUM_ROWS) -> LargeEmbeddingsConfig:
    optimizer = optimizer or {"adagrad": {"lr": 0.1}}
    return LargeEmbeddingsConfig.model_validate(
        {
            "tables": [
                {"name": name, "num_embeddings": num_rows, "embedding_dim": DIM, "data_type": "fp32", "optimizer": optimizer}
                for name in TABLES
            ]
        }
    )


class TinyRecsys(nn.Module):
    def __init__(self, device: Optional[str] = None, seed: int = 0, num_rows: int = NUM_ROWS) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embeddings = LargeEmbeddings(tiny_config(num_rows=num_rows), device=device)
        self.mlp = nn.Sequential(nn.Linear(len(TABLES) * DIM, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        return self.mlp(self.embeddings.pooled_embeddings(features)).squeeze(-1)


def attach_table_optimizers(model: nn.Module) -> None:
    apply_embedding_optimizers(model, tiny_config().table_optimizers())


def tiny_optimizer(model: nn.Module, factory: Any, lr: float) -> Any:
    """The fused tables' optimizer ("fused_opt") and `factory` over the dense parameters ("dense_opt")."""
    dense = DenseGroup(dense_parameters(model), factory, LearningRate(constant=lr))
    return build_combined_optimizer(model, {"dense_opt": dense}, tiny_config().table_optimizers(), fused_first=True)[0]


def make_batch(seed: int) -> tuple[KeyedJaggedTensor, torch.Tensor]:
    """A deterministic batch: 0-3 ids per feature and example, binary labels."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 4, (len(TABLES) * BATCH,), generator=generator)
    values = torch.randint(0, NUM_ROWS, (int(lengths.sum()),), generator=generator)
    labels = torch.randint(0, 2, (BATCH,), generator=generator).float()
    return KeyedJaggedTensor.from_lengths_sync(keys=TABLES, values=values, lengths=lengths), labels


def batch_seed(step: int, rank: int) -> int:
    return 1000 * step + rank


def build_sharded(
    sharding_type: str, seed: int = 0, adam_lr: float = 0.01, num_rows: int = NUM_ROWS
) -> tuple[nn.Module, Any]:
    """TinyRecsys sharded over the default group with every table `sharding_type`; fused Adagrad for
    the tables, Adam for the MLP."""
    quiet_torchrec_warnings()
    model = TinyRecsys(seed=seed, num_rows=num_rows)
    attach_table_optimizers(model)
    constraints = {name: TableShardingConfig(sharding_type=sharding_type) for name in TABLES}
    sharded = maybe_shard_model(model, torch.device("cpu"), constraints)
    optimizer = tiny_optimizer(sharded, lambda params: torch.optim.Adam(params, lr=adam_lr), adam_lr)
    return sharded, optimizer


def train_steps(model: nn.Module, optimizer: Any, steps: range, rank: int) -> list[float]:
    """One batch per step and rank; returns the global mean loss of each step."""
    losses = []
    for step in steps:
        features, labels = make_batch(batch_seed(step, rank))
        loss = nn.functional.binary_cross_entropy_with_logits(model(features), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        global_loss = loss.detach().clone()
        if dist.is_initialized():
            dist.all_reduce(global_loss)
            global_loss /= dist.get_world_size()
        losses.append(global_loss.item())
    return losses


def eval_outputs(model: nn.Module, seeds: list[int]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(make_batch(seed)[0]).clone() for seed in seeds]


def _local_sum(value: Any) -> torch.Tensor:
    if hasattr(value, "local_shards"):
        return sum((shard.tensor.double().sum() for shard in value.local_shards()), torch.zeros((), dtype=torch.float64))
    return value.double().sum()


def model_checksums(state_dict: dict[str, Any]) -> dict[str, float]:
    """Sum of every tensor of the whole model: sharded tables summed over ranks, dense (replicated)
    tensors counted once."""
    sums = {}
    for key in sorted(state_dict):
        total = _local_sum(state_dict[key])
        if dist.is_initialized() and hasattr(state_dict[key], "local_shards"):
            dist.all_reduce(total)
        sums[key] = total.item()
    return sums


def flat_tensors(state: Any, prefix: str = "") -> dict[str, Any]:
    out = {}
    if isinstance(state, dict):
        for key, value in state.items():
            out.update(flat_tensors(value, f"{prefix}{key}."))
    elif isinstance(state, torch.Tensor):
        out[prefix[:-1]] = state
    return out


def optimizer_checksums(optimizer: Any) -> dict[str, float]:
    """Checksums of fused (sharded, per-table) and dense (replicated) optimizer state."""
    flat = flat_tensors(optimizer.state_dict()["state"])
    fused = {key: value for key, value in flat.items() if key.startswith("fused_opt.")}
    dense = {key: value for key, value in flat.items() if key.startswith("dense_opt.")}
    # Fused state lists only this rank's tables: gather per-table sums over all ranks.
    local = {key: _local_sum(value).item() for key, value in fused.items()}
    if dist.is_initialized():
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, local)
        merged: dict[str, float] = {}
        for part in gathered:
            for key, value in part.items():
                merged[key] = merged.get(key, 0.0) + value
        local = merged
    local.update({key: value.double().sum().item() for key, value in dense.items()})
    return local
