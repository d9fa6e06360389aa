"""PyTorch-BigGraph's losses over a batch's chunk scores, and the regularisation of touched rows.

Every loss reads `ChunkScores`: each edge's positive score (per side: the two are equal unless
relations are reciprocal) and its [C + G] candidate scores per side, of which `mask` says which are
negatives. Edges weigh their weight (padding 0). Normalisation: logistic averages over every scored
pair (the original's BCE mean); softmax and ranking average over edges.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F

from tml.projects.twhin.models.config import LossKind, Regularizer


@dataclasses.dataclass
class ChunkScores:
    positive_lhs: torch.Tensor  # [K, C] score the lhs candidates are ranked against
    positive_rhs: torch.Tensor  # [K, C] score the rhs candidates are ranked against
    negative_lhs: torch.Tensor  # [K, C, C + G] edge i's score with lhs node j of its chunk's block
    negative_rhs: torch.Tensor  # [K, C, C + G] the same with the rhs replaced
    mask: torch.Tensor  # [C, C + G] bool: which block rows are negatives of the edge at each position
    negatives_per_edge: torch.Tensor  # [C] mask.sum(1): negatives per side
    weights: torch.Tensor  # [K, C] edge weights
    touched: list[torch.Tensor] = dataclasses.field(default_factory=list)  # [K, C, D] rows to regularise

    @property
    def num_edges(self) -> int:
        return self.weights.numel()

    @property
    def distinct_positives(self) -> bool:
        return self.positive_rhs is not self.positive_lhs

    def sides(self) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        return (self.positive_lhs, self.negative_lhs), (self.positive_rhs, self.negative_rhs)

    def negative_weights(self) -> torch.Tensor:
        """[K, C, C + G] an edge's weight shared equally by its negatives of both sides (0 off the mask)."""
        share = self.weights / (2 * self.negatives_per_edge).clamp(min=1)
        return share.unsqueeze(-1) * self.mask


def logistic_loss(scores: ChunkScores, margin: float = 0.0) -> torch.Tensor:
    """The original's weighted BCE: sum of w * softplus(-positive) and of each negative's share of
    w * softplus(negative), over the number of scored pairs (positives and negatives of both sides)."""
    weights = scores.weights
    if scores.distinct_positives:
        positive = 0.5 * (F.softplus(-scores.positive_lhs) + F.softplus(-scores.positive_rhs))
    else:
        positive = F.softplus(-scores.positive_lhs)
    negative = F.softplus(scores.negative_lhs) + F.softplus(scores.negative_rhs)
    total = (weights * positive).sum() + (scores.negative_weights() * negative).sum()
    chunks = scores.weights.shape[0]
    pairs = scores.num_edges + 2 * chunks * scores.negatives_per_edge.sum()
    return total / pairs


def softmax_loss(scores: ChunkScores, margin: float = 0.0) -> torch.Tensor:
    """Per edge and side, -log softmax of the positive among itself and its negatives; mean over edges."""
    total = scores.weights.new_zeros(())
    for positive, negative in scores.sides():
        negative = negative.masked_fill(~scores.mask, float("-inf"))
        candidates = torch.cat([positive.unsqueeze(-1), negative], -1)
        total = total + (scores.weights * (torch.logsumexp(candidates, -1) - positive)).sum()
    return total / scores.num_edges


def ranking_loss(scores: ChunkScores, margin: float = 0.1) -> torch.Tensor:
    """Sum over negatives of max(0, margin - positive + negative), per edge and side; mean over edges."""
    total = scores.weights.new_zeros(())
    for positive, negative in scores.sides():
        hinge = (margin - positive.unsqueeze(-1) + negative).clamp(min=0) * scores.mask
        total = total + (scores.weights * hinge.sum(-1)).sum()
    return total / scores.num_edges


LOSSES: dict[LossKind, Callable[..., torch.Tensor]] = {
    LossKind.LOGISTIC: logistic_loss,
    LossKind.SOFTMAX: softmax_loss,
    LossKind.RANKING: ranking_loss,
}


def regularization(rows: list[torch.Tensor], weights: torch.Tensor, kind: Regularizer) -> torch.Tensor:
    """Weighted mean over edges of the penalty of each edge's rows (`rows`: [K, C, D] each)."""
    if kind == Regularizer.NONE:
        return weights.new_zeros(())
    power = 2 if kind == Regularizer.L2 else 3
    per_edge = sum(row.abs().pow(power).sum(-1) for row in rows)
    return (weights * per_edge).sum() / weights.numel()
