"""The TwHIN optimizer: each table's fused optimizer with its own LR schedule, plus the relation
vectors' dense optimizer, combined into one torchrec `CombinedOptimizer` (what the loop steps and
checkpoints), and an `LRShim` that drives every param group's lr (the original built the schedules
and never applied them). Both come from `tml.core.optimizers.build_combined_optimizer`, which also
gives tables placed data-parallel a plain optimizer of their own algorithm ("table_<name>")."""
from __future__ import annotations

from torch import nn
from torchrec.optim.keyed import CombinedOptimizer

from tml.core.optimizers import DenseGroup, LRShim, build_combined_optimizer, dense_parameters
from tml.projects.twhin.models.config import TwhinModelConfig
from tml.projects.twhin.models.models import TRANSLATION_PARAM

FUSED_KEY = "fused_opt"
TRANSLATION_KEY = "operator_opt"  # the original's name for the relation vectors' optimizer


def build_optimizer(model: nn.Module, config: TwhinModelConfig) -> tuple[CombinedOptimizer, LRShim]:
    """(optimizer, scheduler) for a `TwhinModel` whose tables got their optimizers
    (`apply_embedding_optimizers`) and that was then sharded. Step the scheduler after each step."""
    dense = dense_parameters(model)
    unknown = sorted(name for name in dense if name.split(".")[-1] != TRANSLATION_PARAM)
    if unknown:
        raise ValueError(f"parameters {unknown} belong to no TwHIN table and are not the relation vectors.")
    groups = {TRANSLATION_KEY: DenseGroup.from_config(dense, config.translation_optimizer)} if dense else {}
    return build_combined_optimizer(
        model, groups, config.embeddings.table_optimizers(), fused_key=FUSED_KEY, fused_first=True
    )
