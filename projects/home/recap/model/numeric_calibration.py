"""Undo the label-dependent down-sampling of the training data in the predicted probabilities."""

from __future__ import annotations

import torch
from torch import nn


class NumericCalibration(nn.Module):
    """p_true = p * r / (1 - p + p * r), with r = neg_downsampling_rate / pos_downsampling_rate.

    Keeping positives with probability `pos` and negatives with probability `neg` multiplies the odds
    of a positive by pos / neg; multiplying the predicted odds p / (1 - p) by r reverses that.
    """

    def __init__(self, pos_downsampling_rate: float, neg_downsampling_rate: float) -> None:
        super().__init__()
        if not (0.0 < pos_downsampling_rate <= 1.0 and 0.0 < neg_downsampling_rate <= 1.0):
            raise ValueError(
                f"down-sampling rates must lie in (0, 1], got pos_downsampling_rate={pos_downsampling_rate}, "
                f"neg_downsampling_rate={neg_downsampling_rate}."
            )
        self.register_buffer("ratio", torch.tensor(neg_downsampling_rate / pos_downsampling_rate))

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        return probs * self.ratio / (1.0 - probs + probs * self.ratio)
