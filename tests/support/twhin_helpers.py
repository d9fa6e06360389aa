"""Small TwHIN configs and models shared by the tests under tests/projects/twhin."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch

from tml.projects.twhin.models.config import TwhinModelConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "projects" / "twhin" / "config"

TABLES = {"user": 40, "tweet": 24}
RELATIONS = [("fav", "user", "tweet"), ("follow", "user", "user")]


def model_config(
    operators: Sequence[str] = ("translation", "translation"),
    tables: Optional[dict[str, int]] = None,
    relations: Optional[Sequence[tuple[str, str, str]]] = None,
    dim: int = 8,
    lr: float = 0.1,
    algorithm: str = "sgd",
    table_schedules: Optional[dict[str, dict]] = None,
    translation: Optional[dict] = None,
) -> TwhinModelConfig:
    tables = tables or TABLES
    relations = relations or RELATIONS
    schedules = table_schedules or {}
    return TwhinModelConfig.model_validate({
        "embeddings": {"tables": [
            {"name": name, "num_embeddings": size, "embedding_dim": dim, "data_type": "fp32",
             "optimizer": {algorithm: {"lr": lr}, **({"learning_rate": schedules[name]} if name in schedules else {})}}
            for name, size in tables.items()
        ]},
        "relations": [
            {"name": name, "lhs": lhs, "rhs": rhs, "operator": operator}
            for (name, lhs, rhs), operator in zip(relations, operators)
        ],
        "translation_optimizer": translation or {"sgd": {"lr": 0.1}},
    })


def sharded_model(config: TwhinModelConfig, seed: int = 0):
    """(DMP-wrapped TwhinModelAndLoss, optimizer, scheduler) on the current process group."""
    from tml.common.sharding import maybe_shard_model, quiet_torchrec_warnings
    from tml.core.optimizers import apply_embedding_optimizers
    from tml.projects.twhin.models.models import TwhinModel, TwhinModelAndLoss
    from tml.projects.twhin.optimizer import build_optimizer

    quiet_torchrec_warnings()
    torch.manual_seed(seed)
    model = TwhinModelAndLoss(TwhinModel(config))
    fused_params = apply_embedding_optimizers(model, config.embeddings.table_optimizers())
    sharded = maybe_shard_model(model, torch.device("cpu"), fused_params=fused_params)
    optimizer, scheduler = build_optimizer(sharded, config)
    return sharded, optimizer, scheduler
