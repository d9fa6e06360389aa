from tml.core.optimizers.combined import (
    DenseGroup,
    build_combined_optimizer,
    dense_parameters,
    table_key,
)
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
from tml.core.optimizers.embedding import (
    apply_embedding_optimizers,
    get_embedding_optimizer,
    sharder_fused_params,
    table_of_parameter,
)
from tml.core.optimizers.optimizer import (
    LRShim,
    apply_fused_lr_now,
    build_optimizer,
    get_optimizer_class,
    param_group_names,
)
from tml.core.optimizers.schedules import compute_lr
from tml.core.optimizers.tree import leaf_optimizers

__all__ = [
    "AdagradConfig",
    "AdamConfig",
    "DenseGroup",
    "EmbeddingOptimizerConfig",
    "LRShim",
    "LearningRate",
    "OptimizerConfig",
    "SgdConfig",
    "apply_embedding_optimizers",
    "apply_fused_lr_now",
    "build_combined_optimizer",
    "build_optimizer",
    "compute_lr",
    "dense_parameters",
    "get_embedding_optimizer",
    "get_learning_rate",
    "get_optimizer_algorithm_config",
    "get_optimizer_class",
    "leaf_optimizers",
    "param_group_names",
    "sharder_fused_params",
    "table_key",
    "table_of_parameter",
]
