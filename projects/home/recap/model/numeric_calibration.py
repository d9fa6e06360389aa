"""Undo the label-dependent down-sampling of the training data, in the probabilities or in the loss.

A task's data that kept positives with probability `pos` and negatives with probability `neg` has
its odds of a positive multiplied by pos / neg. Two corrections give full-data probabilities, and a
model uses exactly one (`ModelConfig.downsampling_correction`):
- calibration: train on the sample as it is (the model learns the sample's odds) and multiply the
  predicted odds by neg / pos (`NumericCalibration`);
- loss weights: weight each example by 1/rate of its label (`sampling_weights`), so the sample counts
  as the full data and the model learns its odds directly.
Applying both (as the original did) under-predicts by the rate ratio once more.
"""

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


def sampling_weights(labels: torch.Tensor, rates: torch.Tensor) -> torch.Tensor:
    """[B, T] weights y / pos + (1 - y) / neg; `rates` is [2, T] (pos rates, then neg rates)."""
    labels = labels.to(rates.dtype)
    return labels / rates[0] + (1.0 - labels) / rates[1]
