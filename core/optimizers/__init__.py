from tml.core.optimizers.config import (
    AdagradConfig,
    AdamConfig,
    EmbeddingOptimizerConfig,
    LearningRate,
    OptimizerConfig,
    SgdConfig,
    get_learning_rate,
    get_optimizer_algorithm_config,
)
from tml.core.optimizers.optimizer import (
    LRShim,
    apply_embedding_optimizer,
    apply_fused_lr_now,
    build_optimizer,
    get_embedding_optimizer,
    get_optimizer_class,
    param_group_names,
)
from tml.core.optimizers.schedules import compute_lr

__all__ = [
    "AdagradConfig",
    "AdamConfig",
    "EmbeddingOptimizerConfig",
    "LRShim",
    "LearningRate",
    "OptimizerConfig",
    "SgdConfig",
    "apply_embedding_optimizer",
    "apply_fused_lr_now",
    "build_optimizer",
    "compute_lr",
    "get_embedding_optimizer",
    "get_learning_rate",
    "get_optimizer_algorithm_config",
    "get_optimizer_class",
    "param_group_names",
]
