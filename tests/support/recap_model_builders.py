"""Tiny Heavy Ranker configs and batches shared by the recap model tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from tml.projects.home.recap.model.config import ModelConfig

NUM_CONTINUOUS, NUM_BINARY, NUM_DISCRETE, EMBEDDING_WIDTH = 6, 3, 4, 5
TASKS = ("recap.engagement.is_favorited", "recap.engagement.is_replied")

INPUT_SHAPES = {
    "continuous": torch.Size([-1, NUM_CONTINUOUS]),
    "binary": torch.Size([-1, NUM_BINARY]),
    "discrete": torch.Size([-1, NUM_DISCRETE]),
    "user_embedding": torch.Size([-1, EMBEDDING_WIDTH]),
}

TOWER = {"mlp_config": {"layer_sizes": [4, 1]}}


@dataclass
class TaskRates:
    pos_downsampling_rate: float = 1.0
    neg_downsampling_rate: float = 1.0


@dataclass
class DataConfigStub:
    """What the model reads from a RecapDataConfig: `tasks` in label-column order."""

    tasks: dict[str, TaskRates] = field(default_factory=dict)


def data_config(task_names: Sequence[str] = TASKS, **rates: tuple[float, float]) -> DataConfigStub:
    """`rates` maps a task name with dots replaced by "__" to (pos, neg) down-sampling rates."""
    tasks = {}
    for name in task_names:
        pos, neg = rates.get(name.replace(".", "__"), (1.0, 1.0))
        tasks[name] = TaskRates(pos, neg)
    return DataConfigStub(tasks)


def model_config(
    tower: Optional[dict[str, Any]] = None,
    backbone: Optional[dict[str, Any]] = None,
    multi_task_type: str = "share_none",
    tasks: Sequence[str] = TASKS,
    **extra: Any,
) -> ModelConfig:
    document: dict[str, Any] = {
        "tasks": {name: dict(tower or TOWER) for name in tasks},
        "multi_task_type": multi_task_type,
        "featurization_config": {"log1p_abs_config": {}},
    }
    if backbone is not None:
        document["backbone"] = backbone
    document.update(extra)
    return ModelConfig.model_validate(document)


def sparse_features(batch_size: int, names_and_sizes: dict[str, int], seed: int = 0) -> KeyedJaggedTensor:
    """One or two ids per example for each feature."""
    generator = torch.Generator().manual_seed(seed)
    lengths, values = [], []
    for size in names_and_sizes.values():
        feature_lengths = torch.randint(1, 3, (batch_size,), generator=generator)
        lengths.append(feature_lengths)
        values.append(torch.randint(0, size, (int(feature_lengths.sum()),), generator=generator))
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(names_and_sizes), values=torch.cat(values), lengths=torch.cat(lengths)
    )


def batch(batch_size: int = 8, seed: int = 0, num_labels: int = len(TASKS)) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "continuous_features": torch.randn(batch_size, NUM_CONTINUOUS, generator=generator) * 10,
        "binary_features": torch.randint(0, 2, (batch_size, NUM_BINARY), generator=generator),
        "discrete_features": torch.randint(0, 5, (batch_size, NUM_DISCRETE), generator=generator),
        "user_embedding": torch.randn(batch_size, EMBEDDING_WIDTH, generator=generator),
        "labels": torch.randint(0, 2, (batch_size, num_labels), generator=generator),
    }


def model_inputs(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if name not in ("labels", "weights", "label_names")}


# One config per architecture: as a tower (ending in one logit) and as a backbone.
ARCHITECTURE_TOWERS = {
    "mlp": {"mlp_config": {"layer_sizes": [4, 1], "batch_norm": {"affine": False}, "dropout": {"rate": 0.1}}},
    "dcn": {
        "dcn_config": {
            "poly_degree": 2,
            "projection_dim": 2,
            "parallel_mlp": {"layer_sizes": [3]},
            "output_mlp": {"layer_sizes": [1]},
        }
    },
    "mask_net_parallel": {
        "mask_net_config": {
            "mask_blocks": [
                {"output_size": 4, "aggregation_size": 3, "input_layer_norm": True},
                {"output_size": 2, "reduction_factor": 0.5, "input_layer_norm": False},
            ],
            "mlp": {"layer_sizes": [1]},
            "use_parallel": True,
        }
    },
    "mask_net_serial": {
        "mask_net_config": {
            "mask_blocks": [
                {"output_size": 4, "aggregation_size": 3, "input_layer_norm": True},
                {"output_size": 2, "reduction_factor": 0.5, "input_layer_norm": False},
            ],
            "mlp": {"layer_sizes": [3, 1]},
            "use_parallel": False,
        }
    },
    "dlrm": {"dlrm_config": {"bottom_mlp": {"layer_sizes": [4]}, "top_mlp": {"layer_sizes": [3, 1]}}},
}
ARCHITECTURE_BACKBONES = {
    "mlp": {"mlp_config": {"layer_sizes": [8, 6], "final_layer_activation": True}},
    "dcn": {"dcn_config": {"poly_degree": 1, "parallel_mlp": {"layer_sizes": [3]}, "use_parallel": False}},
    "mask_net_parallel": {
        "mask_net_config": {
            "mask_blocks": [{"output_size": 4, "aggregation_size": 3, "input_layer_norm": False}] * 2,
            "mlp": {"layer_sizes": [6], "final_layer_activation": True},
            "use_parallel": True,
        }
    },
    "mask_net_serial": {
        "mask_net_config": {
            "mask_blocks": [{"output_size": 5, "aggregation_size": 3, "input_layer_norm": False}] * 2,
            "mlp": {"layer_sizes": [6]},
            "use_parallel": False,
        }
    },
    "dlrm": {"dlrm_config": {"bottom_mlp": {"layer_sizes": [4]}, "top_mlp": {"layer_sizes": [6]}}},
}

LARGE_TABLES = {"user_id": 11, "item_id": 13}
LARGE_EMBEDDINGS = {
    "tables": [
        {"name": name, "num_embeddings": size, "embedding_dim": 4} for name, size in LARGE_TABLES.items()
    ],
    "optimizer": {"init_learning_rate": 0.1},
}
SMALL_EMBEDDINGS = {"tables": [{"name": "country", "num_embeddings": 5, "embedding_dim": 3, "index": 0}]}
POSITION_DEBIAS = {"max_position": 3, "num_dims": 2, "position_feature_index": 1}


def all_inputs_config(architecture: str, multi_task_type: str) -> ModelConfig:
    """Every input option on: large and small embeddings, position debias, TwHIN embedding."""
    backbone = None if multi_task_type == "share_none" else ARCHITECTURE_BACKBONES[architecture]
    return model_config(
        tower=ARCHITECTURE_TOWERS[architecture],
        backbone=backbone,
        multi_task_type=multi_task_type,
        large_embeddings=LARGE_EMBEDDINGS,
        small_embeddings=SMALL_EMBEDDINGS,
        position_debias_config=POSITION_DEBIAS,
        featurization_config={"double_norm_log_config": {"batch_norm_config": {}, "layer_norm_config": {}}},
    )


def full_batch(batch_size: int = 8, seed: int = 0, num_labels: int = len(TASKS)) -> dict[str, Any]:
    fields = batch(batch_size, seed, num_labels)
    fields["sparse_features"] = sparse_features(batch_size, LARGE_TABLES, seed)
    return fields


def local_prod_model_config() -> ModelConfig:
    """The production architecture of the original local_prod.yaml (spec 7.2), built in code."""
    block = {
        "aggregation_size": 1024,
        "output_size": 1024,
        "input_layer_norm": False,
        "reduction_factor": None,
    }
    tower = {
        "mlp_config": {
            "layer_sizes": [256, 128, 1],
            "batch_norm": {"affine": False, "momentum": 0.1},
            "final_layer_activation": False,
        }
    }
    task_names = [
        "is_favorited",
        "is_good_clicked_convo_desc_favorited_or_replied",
        "is_good_clicked_convo_desc_v2",
        "is_negative_feedback_v2",
        "is_profile_clicked_and_profile_engaged",
        "is_replied",
        "is_replied_reply_engaged_by_author",
        "is_report_tweet_clicked",
        "is_retweeted",
        "is_video_playback_50",
    ]
    return ModelConfig.model_validate(
        {
            "multi_task_type": "share_all",
            "backbone": {
                "mask_net_config": {
                    "mask_blocks": [block] * 4,
                    "use_parallel": True,
                    "mlp": {"layer_sizes": [2048], "final_layer_activation": True},
                }
            },
            "featurization_config": {
                "double_norm_log_config": {
                    "batch_norm_config": {"affine": True, "momentum": 0.01},
                    "clip_magnitude": 5.0,
                    "layer_norm_config": {"axis": -1, "center": True, "epsilon": 0.0, "scale": True},
                }
            },
            "tasks": {f"recap.engagement.{name}": tower for name in task_names},
        }
    )


LOCAL_PROD_SHAPES = {
    "continuous": torch.Size([-1, 2117]),
    "binary": torch.Size([-1, 59]),
    "discrete": torch.Size([-1, 320]),
    "user_embedding": torch.Size([-1, 200]),
    "user_eng_embedding": torch.Size([-1, 200]),
    "author_embedding": torch.Size([-1, 200]),
}
