"""The `model` section of the Heavy Ranker config.

Names, fields and defaults follow the original. Where the original defined a class twice, the
definition that was in effect (the later one) is the one kept here.
"""

from __future__ import annotations

import enum
from typing import Dict, List, Optional

import pydantic
from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from tml.core.config import BaseConfig
from tml.projects.home.recap.embedding.config import (
    RecapLargeEmbeddingsConfig,
    SmallEmbeddingsConfig,
    StratifierConfig,
)


class DropoutConfig(BaseConfig):
    rate: float = Field(
        0.1, gt=0, lt=1, description="Probability of zeroing an activation in training, in (0, 1)."
    )


class LayerNormConfig(BaseConfig):
    """Keras-style names. `center` adds the learned bias, `scale` the learned gain."""

    epsilon: float = Field(1e-3, description="Added to the variance; 0 gives NaN on constant rows.")
    axis: int = Field(-1, description="Normalised axis; only the feature axis (-1 or 1) is supported.")
    center: bool = True
    scale: bool = True


class BatchNormConfig(BaseConfig):
    affine: bool = Field(True, description="Learn a per-feature gain and bias.")
    momentum: PositiveFloat = Field(
        0.1, description="PyTorch semantics: running = (1 - momentum) * running + momentum * batch."
    )


class DenseLayerConfig(BaseConfig):
    """Kept for config compatibility; no model uses it (as in the original)."""

    layer_size: PositiveInt
    dropout: Optional[DropoutConfig] = None


class MlpConfig(BaseConfig):
    layer_sizes: List[PositiveInt] = Field(..., description="Widths of the layers; the last is the output.")
    batch_norm: Optional[BatchNormConfig] = Field(None, description="BatchNorm after each hidden layer.")
    dropout: Optional[DropoutConfig] = Field(None, description="Dropout after each hidden activation.")
    final_layer_activation: bool = Field(False, description="ReLU after the last layer too.")


class DoubleNormLogConfig(BaseConfig):
    """signed log1p of the continuous features, BatchNorm, clamp, then LayerNorm over all features."""

    batch_norm_config: Optional[BatchNormConfig] = None
    clip_magnitude: float = Field(5.0, description="Clamp after BatchNorm to [-clip, clip].")
    layer_norm_config: Optional[LayerNormConfig] = None


class Log1pAbsConfig(BaseConfig):
    """signed log1p of the continuous features, nothing else."""


class ClipLog1pAbsConfig(BaseConfig):
    clip_magnitude: NonNegativeFloat = Field(
        3e38, description="Clamp the raw value to [-clip, clip] before the signed log1p."
    )


class ZScoreLogConfig(BaseConfig):
    """signed log1p, then (x - mean) / std with per-feature statistics read from analysis_path."""

    analysis_path: str = Field(
        ..., description="JSON written by `compute_feature_statistics` (model/feature_statistics.py)."
    )
    schema_path: Optional[str] = Field(
        None,
        description="Accepted for compatibility; features are matched to statistics by column position.",
    )
    clip_magnitude: float = Field(5.0, description="Clamp the z-scores to [-clip, clip].")
    use_batch_norm: bool = Field(False, description="BatchNorm (no affine) after the z-score.")
    use_renorm: bool = Field(False, description="Use batch renormalisation instead of BatchNorm.")
    use_bq_stats: bool = Field(
        False,
        description="Accepted for compatibility; statistics always come from analysis_path.",
    )


class FeaturizationConfig(BaseConfig):
    log1p_abs_config: Optional[Log1pAbsConfig] = Field(None, json_schema_extra={"one_of": "featurization"})
    clip_log1p_abs_config: Optional[ClipLog1pAbsConfig] = Field(
        None, json_schema_extra={"one_of": "featurization"}
    )
    z_score_log_config: Optional[ZScoreLogConfig] = Field(None, json_schema_extra={"one_of": "featurization"})
    double_norm_log_config: Optional[DoubleNormLogConfig] = Field(
        None, json_schema_extra={"one_of": "featurization"}
    )
    feature_names_to_concat: List[str] = Field(
        ["binary"],
        description="Batch tensors appended unchanged after the transformed continuous features "
        "('binary', 'discrete').",
    )


class DcnConfig(BaseConfig):
    """Deep & Cross Network (v2): `poly_degree` cross layers, optionally beside or before a deep MLP."""

    poly_degree: PositiveInt = Field(..., description="Number of cross layers.")
    projection_dim: Optional[PositiveInt] = Field(
        None, description="Rank of each cross layer's weight (low-rank U V^T); None = full rank."
    )
    parallel_mlp: Optional[MlpConfig] = Field(None, description="The deep network.")
    use_parallel: bool = Field(
        True,
        description="True: deep network beside the cross network, outputs concatenated; "
        "False: deep network on the cross network's output (stacked).",
    )
    output_mlp: Optional[MlpConfig] = Field(None, description="MLP on the combined output.")


class MaskBlockConfig(BaseConfig):
    output_size: PositiveInt
    reduction_factor: Optional[PositiveFloat] = Field(
        None,
        json_schema_extra={"one_of": "aggregation_size"},
        description="Hidden width of the mask = mask input width * reduction_factor.",
    )
    aggregation_size: Optional[PositiveInt] = Field(
        None, json_schema_extra={"one_of": "aggregation_size"}, description="Hidden width of the mask."
    )
    input_layer_norm: bool = Field(..., description="LayerNorm the block's input before masking.")


class MaskNetConfig(BaseConfig):
    mask_blocks: List[MaskBlockConfig]
    mlp: Optional[MlpConfig] = Field(None, description="MLP on the MaskNet's output.")
    use_parallel: bool = Field(
        False, description="Parallel blocks on the same input (outputs concatenated) or a serial chain."
    )


class PositionDebiasConfig(BaseConfig):
    """A learned embedding of the display position, dropped at random in training, unknown at serving."""

    max_position: PositiveInt = Field(256, description="Positions above this share the last bucket.")
    num_dims: PositiveInt = Field(64, description="Width of the position embedding.")
    drop_probability: float = Field(
        0.5, ge=0.0, le=1.0, description="Probability of hiding the position of a training example."
    )
    position_feature_index: int = Field(..., ge=0, description="Column of `discrete_features`.")


class AffineMap(BaseConfig):
    """A trainable `scale * logit + bias`, initialised to these values."""

    scale: float = 1.0
    bias: float = 0.0


class DLRMConfig(BaseConfig):
    bottom_mlp: MlpConfig = Field(..., description="MLP over the dense part of the input.")
    top_mlp: MlpConfig = Field(..., description="MLP over the bottom output and the pairwise interactions.")


class TaskModel(BaseConfig):
    mlp_config: Optional[MlpConfig] = Field(None, json_schema_extra={"one_of": "architecture"})
    dcn_config: Optional[DcnConfig] = Field(None, json_schema_extra={"one_of": "architecture"})
    dlrm_config: Optional[DLRMConfig] = Field(None, json_schema_extra={"one_of": "architecture"})
    mask_net_config: Optional[MaskNetConfig] = Field(None, json_schema_extra={"one_of": "architecture"})
    affine_map: Optional[AffineMap] = Field(None, description="Affine map applied to the tower's logit.")
    pos_weight: float = Field(1.0, description="Weight of positive examples in this task's loss.")


class MultiTaskType(str, enum.Enum):
    SHARE_NONE = "share_none"  # each tower reads the features
    SHARE_ALL = "share_all"  # each tower reads the backbone's output
    SHARE_PARTIAL = "share_partial"  # each tower reads the features and the backbone's output


class DownsamplingCorrection(str, enum.Enum):
    """How a model trained on down-sampled data (train_data.tasks' rates) predicts for the full data.

    Exactly one of the two corrections is applied; the original applied both (spec defect B18).
    """

    CALIBRATION = "calibration"  # loss unweighted by the rates; calibrated_probabilities undo them
    LOSS_WEIGHTS = "loss_weights"  # loss weighted by 1/rate; outputs need no correction


class ModelConfig(BaseConfig):
    tasks: Dict[str, TaskModel] = Field(..., description="Towers by task name, in model output order.")
    downsampling_correction: DownsamplingCorrection = Field(
        DownsamplingCorrection.CALIBRATION,
        description="calibration: train on the down-sampled data as it is and let calibrated_probabilities "
        "undo train_data's rates; loss_weights: weight the loss by 1/rate, calibrated = raw probabilities.",
    )
    large_embeddings: Optional[RecapLargeEmbeddingsConfig] = None
    small_embeddings: Optional[SmallEmbeddingsConfig] = None
    position_debias_config: Optional[PositionDebiasConfig] = None
    featurization_config: Optional[FeaturizationConfig] = None
    multi_task_type: MultiTaskType = MultiTaskType.SHARE_NONE
    backbone: Optional[TaskModel] = Field(None, description="Shared network; share_all/share_partial only.")
    stratifiers: Optional[List[StratifierConfig]] = Field(
        None, description="Strata (discrete column == value) each validation set is also evaluated on."
    )

    @pydantic.field_validator("stratifiers")
    @classmethod
    def _stratifier_names_are_unique(cls, stratifiers: Optional[List[StratifierConfig]]) -> Optional[List[StratifierConfig]]:
        names = [stratifier.name for stratifier in stratifiers or []]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"stratifier names must be unique (they name the metrics); repeated: {repeated}")
        return stratifiers

    @pydantic.model_validator(mode="after")
    def _backbone_matches_task_type(self) -> "ModelConfig":
        if self.multi_task_type == MultiTaskType.SHARE_NONE and self.backbone is not None:
            raise ValueError("multi_task_type share_none takes no backbone; remove `backbone`.")
        if self.multi_task_type != MultiTaskType.SHARE_NONE and self.backbone is None:
            raise ValueError(f"multi_task_type {self.multi_task_type.value} needs a `backbone`.")
        return self
