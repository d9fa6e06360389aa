"""Featurization of the dense inputs: continuous features transformed, other tensors appended.

Every featurization first maps non-finite continuous values (NaN, +-inf) to 0, since one NaN in a
row would otherwise poison the whole example through the first dense layer.

- double_norm_log: signed log1p -> [BatchNorm] -> clamp(+-clip) -> append -> [LayerNorm over all]
- log1p_abs:       signed log1p -> append
- clip_log1p_abs:  clamp(+-clip) -> signed log1p -> append
- z_score_log:     signed log1p -> (x - mean) / std -> [BatchNorm | batch renorm] -> clamp(+-clip) -> append
- no featurization_config: nothing beyond the non-finite fix -> append (the binary features)

"append" concatenates the batch tensors named in `feature_names_to_concat` (e.g. the binary features),
cast to float, after the transformed continuous features.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import torch
from torch import nn

from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.model.config import (
    BatchNormConfig,
    ClipLog1pAbsConfig,
    DoubleNormLogConfig,
    FeaturizationConfig,
    LayerNormConfig,
    ZScoreLogConfig,
)
from tml.projects.home.recap.model.feature_statistics import load_feature_statistics

InputShapes = Mapping[str, Sequence[int]]

# Batch tensors a featurization may append, by the name used in `feature_names_to_concat`.
CONCATENABLE_FEATURES = {"binary": "binary_features", "discrete": "discrete_features"}
DEFAULT_CONCAT = ("binary",)


class InputNonFinite(nn.Module):
    def __init__(self, fill_value: float = 0.0) -> None:
        super().__init__()
        self.fill_value = fill_value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(torch.isfinite(x), x, torch.full_like(x, self.fill_value))


class Log1pAbs(nn.Module):
    """sign(x) * log1p(|x|): log-compresses heavy-tailed counts while keeping the sign and 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x) * torch.log1p(torch.abs(x))


class Clamp(nn.Module):
    def __init__(self, min_value: float, max_value: float) -> None:
        super().__init__()
        self.min_value = min_value
        self.max_value = max_value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, min=self.min_value, max=self.max_value)

    def extra_repr(self) -> str:
        return f"min={self.min_value}, max={self.max_value}"


class ZScore(nn.Module):
    """(x - mean) / std with fixed statistics; a zero std is treated as 1 (the feature becomes 0)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.to(torch.float32))
        self.register_buffer("std", torch.where(std > 0, std, torch.ones_like(std)).to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BatchRenorm1d(nn.Module):
    """Batch renormalisation (Ioffe 2017): batch statistics corrected towards the running ones.

    In training x_hat = (x - mu_B) / sigma_B * r + d with r = sigma_B / sigma, d = (mu_B - mu) / sigma
    (both without gradient, clipped to [1/r_max, r_max] and [-d_max, d_max]); in eval the running
    statistics are used, so training and serving see the same normalisation.
    """

    def __init__(
        self,
        num_features: int,
        momentum: float = 0.1,
        eps: float = 1e-5,
        r_max: float = 3.0,
        d_max: float = 5.0,
        affine: bool = True,
    ) -> None:
        super().__init__()
        self.momentum, self.eps, self.r_max, self.d_max = momentum, eps, r_max, d_max
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        running_std = torch.sqrt(self.running_var + self.eps)
        if self.training:
            batch_mean = x.mean(dim=0)
            batch_var = x.var(dim=0, unbiased=False)
            batch_std = torch.sqrt(batch_var + self.eps)
            with torch.no_grad():
                r = torch.clamp(batch_std / running_std, 1.0 / self.r_max, self.r_max)
                d = torch.clamp((batch_mean - self.running_mean) / running_std, -self.d_max, self.d_max)
                self.running_mean.lerp_(batch_mean.detach(), self.momentum)
                self.running_var.lerp_(batch_var.detach(), self.momentum)
            normalized = (x - batch_mean) / batch_std * r + d
        else:
            normalized = (x - self.running_mean) / running_std
        if self.weight is not None:
            normalized = normalized * self.weight + self.bias
        return normalized


class LayerNorm(nn.Module):
    """LayerNorm over the feature axis with Keras-style `center` (bias) and `scale` (gain) switches."""

    def __init__(self, num_features: int, config: LayerNormConfig) -> None:
        super().__init__()
        if config.axis not in (-1, 1):
            raise ValueError(f"layer_norm_config.axis must be -1 (the feature axis), got {config.axis}.")
        if config.epsilon == 0.0:
            logging.warning("layer_norm_config.epsilon is 0: an input row with zero variance becomes NaN.")
        self.epsilon = float(config.epsilon)
        self.num_features = num_features
        self.weight = nn.Parameter(torch.ones(num_features)) if config.scale else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if config.center else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.layer_norm(x, (self.num_features,), self.weight, self.bias, self.epsilon)

    def extra_repr(self) -> str:
        scale, center = self.weight is not None, self.bias is not None
        return f"{self.num_features}, eps={self.epsilon}, scale={scale}, center={center}"


def batch_norm(num_features: int, config: BatchNormConfig) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(num_features, affine=config.affine, momentum=config.momentum)


def feature_shape(input_shapes: InputShapes, name: str) -> Optional[Sequence[int]]:
    """Shape of feature `name` ("continuous"), also found under its batch field name
    ("continuous_features")."""
    for key in (name, f"{name}_features"):
        if key in input_shapes:
            return input_shapes[key]
    return None


def _feature_width(input_shapes: InputShapes, name: str) -> int:
    """0 for a block the data does not provide (its batch tensor is [B, 0])."""
    shape = feature_shape(input_shapes, name)
    return 0 if shape is None else int(shape[-1])


class FeaturePreprocessor(nn.Module):
    """transform(continuous) ++ appended tensors, then an optional normalisation of the whole row."""

    def __init__(
        self,
        continuous_transform: nn.Module,
        num_continuous: int,
        concat_features: Sequence[str],
        concat_widths: Sequence[int],
        output_norm_config: Optional[LayerNormConfig] = None,
    ) -> None:
        super().__init__()
        self.continuous_transform = continuous_transform
        self.concat_features = list(concat_features)
        self.out_features = num_continuous + sum(concat_widths)
        self.output_norm = LayerNorm(self.out_features, output_norm_config) if output_norm_config else None

    def forward(
        self,
        continuous_features: torch.Tensor,
        binary_features: Optional[torch.Tensor] = None,
        discrete_features: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        continuous = self.continuous_transform(continuous_features.float())
        available = {"binary": binary_features, "discrete": discrete_features}
        parts = [continuous]
        for name in self.concat_features:
            tensor = available[name]
            if tensor is None:
                raise ValueError(f"featurization appends '{name}' features but the batch has none.")
            parts.append(tensor.to(continuous.dtype))
        features = torch.cat(parts, dim=1) if len(parts) > 1 else continuous
        return self.output_norm(features) if self.output_norm is not None else features


def _double_norm_log(config: DoubleNormLogConfig, num_continuous: int) -> nn.Sequential:
    layers: list[nn.Module] = [InputNonFinite(), Log1pAbs()]
    if config.batch_norm_config is not None:
        layers.append(batch_norm(num_continuous, config.batch_norm_config))
    layers.append(Clamp(-config.clip_magnitude, config.clip_magnitude))
    return nn.Sequential(*layers)


def _clip_log1p_abs(config: ClipLog1pAbsConfig) -> nn.Sequential:
    return nn.Sequential(InputNonFinite(), Clamp(-config.clip_magnitude, config.clip_magnitude), Log1pAbs())


def _z_score_log(config: ZScoreLogConfig, num_continuous: int) -> nn.Sequential:
    statistics = load_feature_statistics(config.analysis_path)
    if statistics.num_features != num_continuous:
        raise ValueError(
            f"z_score_log analysis file {config.analysis_path} has statistics for "
            f"{statistics.num_features} features but the model gets {num_continuous} continuous features."
        )
    layers: list[nn.Module] = [
        InputNonFinite(),
        Log1pAbs(),
        ZScore(torch.from_numpy(statistics.mean), torch.from_numpy(statistics.std)),
    ]
    if config.use_renorm:
        layers.append(BatchRenorm1d(num_continuous))
    elif config.use_batch_norm:
        layers.append(nn.BatchNorm1d(num_continuous))
    layers.append(Clamp(-config.clip_magnitude, config.clip_magnitude))
    return nn.Sequential(*layers)


def build_features_preprocessor(
    featurization_config: Optional[FeaturizationConfig], input_shapes: InputShapes
) -> FeaturePreprocessor:
    """The featurization the config selects, sized from the data's input shapes."""
    num_continuous = _feature_width(input_shapes, "continuous")
    config = featurization_config
    concat_names = list(config.feature_names_to_concat) if config is not None else list(DEFAULT_CONCAT)
    unknown = [name for name in concat_names if name not in CONCATENABLE_FEATURES]
    if unknown:
        raise ValueError(
            f"featurization_config.feature_names_to_concat has {unknown}; "
            f"valid names are {sorted(CONCATENABLE_FEATURES)}."
        )
    concat_widths = [_feature_width(input_shapes, name) for name in concat_names]

    output_norm = None
    if config is None:
        transform: nn.Module = InputNonFinite()
    elif config.double_norm_log_config is not None:
        transform = _double_norm_log(config.double_norm_log_config, num_continuous)
        output_norm = config.double_norm_log_config.layer_norm_config
    elif config.log1p_abs_config is not None:
        transform = nn.Sequential(InputNonFinite(), Log1pAbs())
    elif config.clip_log1p_abs_config is not None:
        transform = _clip_log1p_abs(config.clip_log1p_abs_config)
    else:
        transform = _z_score_log(config.z_score_log_config, num_continuous)
    return FeaturePreprocessor(transform, num_continuous, concat_names, concat_widths, output_norm)
