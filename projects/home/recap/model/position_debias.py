"""Position debiasing: a learned embedding of where the candidate was shown.

Logged engagement depends on the display position, which is unknown when scoring candidates. The
position (a column of `discrete_features`) gets an embedding that joins the model input, so the model
can explain position effects with it instead of with the other features. A dedicated "unknown
position" row is used
- for a random `drop_probability` share of the training examples, so the model learns to predict
  without the position too,
- in eval mode (the serving situation) unless `use_position_at_eval` is set,
- for negative positions (missing in the data).
Positions above `max_position` share the bucket `max_position`.
"""

from __future__ import annotations

import torch
from torch import nn

from tml.projects.home.recap.model.config import PositionDebiasConfig


class PositionDebias(nn.Module):
    def __init__(self, config: PositionDebiasConfig, use_position_at_eval: bool = False) -> None:
        super().__init__()
        self.max_position = config.max_position
        self.unknown_index = config.max_position + 1
        self.drop_probability = config.drop_probability
        self.position_feature_index = config.position_feature_index
        self.use_position_at_eval = use_position_at_eval
        self.embedding = nn.Embedding(config.max_position + 2, config.num_dims)
        self.out_features = config.num_dims

    def bucket(self, discrete_features: torch.Tensor) -> torch.Tensor:
        """Embedding row of each example's position (before any dropping)."""
        if self.position_feature_index >= discrete_features.shape[1]:
            raise ValueError(
                f"position_feature_index {self.position_feature_index} is outside the "
                f"{discrete_features.shape[1]} discrete features."
            )
        position = discrete_features[:, self.position_feature_index].long()
        unknown = torch.full_like(position, self.unknown_index)
        return torch.where(position < 0, unknown, position.clamp(max=self.max_position))

    def forward(self, discrete_features: torch.Tensor) -> torch.Tensor:
        index = self.bucket(discrete_features)
        unknown = torch.full_like(index, self.unknown_index)
        if self.training:
            dropped = torch.rand(index.shape, device=index.device) < self.drop_probability
            index = torch.where(dropped, unknown, index)
        elif not self.use_position_at_eval:
            index = unknown
        return self.embedding(index)
