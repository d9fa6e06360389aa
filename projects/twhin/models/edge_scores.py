"""Scores of a batch's positives and in-batch negatives, with a hand-written backward.

For edges b with query vectors (score of a candidate x = x . q + bias):
    positive[b]     = rhs[b] . tail_query[b] + tail_bias[b]
    lhs_side[b, n]  = lhs[e] . head_query[b] + head_bias[b],   e = lhs_negatives[rel[b], n]
    rhs_side[b, n]  = rhs[e] . tail_query[b] + tail_bias[b],   e = rhs_negatives[rel[b], n]
The negatives of a relation are shared by its edges, so each side is one GEMM of the queries
against all relations' candidates, of which each edge keeps its relation's block.

Why a Function: autograd of those expressions materialises a separate [B, D] gradient per use of
each input (two products, two zero-filled scatters for the candidates, then the adds that sum them),
and on a CPU these memory passes are most of the step. The backward here writes each input's
gradient once, accumulating in place (addcmul_, index_add_): about half the passes.
"""
from __future__ import annotations

from typing import Any, Optional

import torch


def _own_blocks(all_scores: torch.Tensor, rels: torch.Tensor, num_relations: int, count: int) -> torch.Tensor:
    """[B, N] of [B, R * N]: each edge's own relation's block."""
    size = all_scores.shape[0]
    own = rels.view(size, 1, 1).expand(size, 1, count)
    return all_scores.view(size, num_relations, count).gather(1, own).squeeze(1)


def _spread(grad: torch.Tensor, rels: torch.Tensor, num_relations: int) -> torch.Tensor:
    """[B, R * N] with [B, N] `grad` in each edge's own relation's block, zeros elsewhere."""
    size, count = grad.shape
    full = grad.new_zeros(size, num_relations, count)
    full.scatter_(1, rels.view(size, 1, 1).expand(size, 1, count), grad.unsqueeze(1))
    return full.view(size, num_relations * count)


class _EdgeScores(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        lhs: torch.Tensor,
        rhs: torch.Tensor,
        tail_query: torch.Tensor,
        head_query: torch.Tensor,
        rels: torch.Tensor,
        lhs_negatives: torch.Tensor,
        rhs_negatives: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        num_relations, count = lhs_negatives.shape
        lhs_index = lhs_negatives.clamp(min=0).view(-1)
        rhs_index = rhs_negatives.clamp(min=0).view(-1)
        lhs_candidates = lhs.index_select(0, lhs_index)  # [R * N, D]
        rhs_candidates = rhs.index_select(0, rhs_index)
        positives = (rhs * tail_query).sum(-1)
        lhs_side = _own_blocks(head_query @ lhs_candidates.T, rels, num_relations, count)
        rhs_side = _own_blocks(tail_query @ rhs_candidates.T, rels, num_relations, count)
        ctx.save_for_backward(
            lhs, rhs, tail_query, head_query, rels, lhs_index, rhs_index, lhs_candidates, rhs_candidates
        )
        ctx.num_relations = num_relations
        return positives, lhs_side, rhs_side

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_positives: torch.Tensor, grad_lhs_side: torch.Tensor, grad_rhs_side: torch.Tensor
    ) -> tuple[Optional[torch.Tensor], ...]:
        (lhs, rhs, tail_query, head_query, rels, lhs_index, rhs_index, lhs_candidates, rhs_candidates) = (
            ctx.saved_tensors
        )
        lhs_grads = _spread(grad_lhs_side.contiguous(), rels, ctx.num_relations)  # [B, R * N]
        rhs_grads = _spread(grad_rhs_side.contiguous(), rels, ctx.num_relations)
        weight = grad_positives.unsqueeze(1)
        # lhs rows are only candidates here; rhs rows are candidates and the positives' other factor.
        grad_lhs = torch.zeros_like(lhs).index_add_(0, lhs_index, lhs_grads.T @ head_query)
        grad_rhs = torch.mul(tail_query, weight).index_add_(0, rhs_index, rhs_grads.T @ tail_query)
        grad_tail_query = torch.mm(rhs_grads, rhs_candidates).addcmul_(rhs, weight)
        grad_head_query = torch.mm(lhs_grads, lhs_candidates)
        return grad_lhs, grad_rhs, grad_tail_query, grad_head_query, None, None, None


def edge_scores(
    lhs: torch.Tensor,
    rhs: torch.Tensor,
    tail_query: torch.Tensor,
    tail_bias: Optional[torch.Tensor],
    head_query: torch.Tensor,
    head_bias: Optional[torch.Tensor],
    rels: torch.Tensor,
    lhs_negatives: torch.Tensor,
    rhs_negatives: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """([B] positives, [B, N] lhs-side and [B, N] rhs-side in-batch negative scores) for lhs, rhs,
    queries [B, D], biases [B] (None: zero), relations [B] and negatives [R, N] (edge indices,
    -1 = none: scored against edge 0, their loss weight is 0)."""
    positives, lhs_side, rhs_side = _EdgeScores.apply(
        lhs, rhs, tail_query, head_query, rels, lhs_negatives, rhs_negatives
    )
    if tail_bias is not None:
        positives = positives + tail_bias
        rhs_side = rhs_side + tail_bias.unsqueeze(1)
    if head_bias is not None:
        lhs_side = lhs_side + head_bias.unsqueeze(1)
    return positives, lhs_side, rhs_side


class _TranslationEdgeScores(torch.autograd.Function):
    """`edge_scores` for relations that all use the translation operator, with the operator's own
    math (relation gather, bias, head query) inside: score(l, r, x) = l . (x + r)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        lhs: torch.Tensor,
        rhs: torch.Tensor,
        relations: torch.Tensor,
        rels: torch.Tensor,
        lhs_negatives: torch.Tensor,
        rhs_negatives: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        num_relations, count = lhs_negatives.shape
        relation = relations.index_select(0, rels)  # [B, D]
        head_query = rhs + relation  # scores lhs candidates: x . (rhs + r)
        tail_bias = (lhs * relation).sum(-1)  # rhs candidates: x . lhs + lhs . r
        lhs_index = lhs_negatives.clamp(min=0).view(-1)
        rhs_index = rhs_negatives.clamp(min=0).view(-1)
        lhs_candidates = lhs.index_select(0, lhs_index)
        rhs_candidates = rhs.index_select(0, rhs_index)
        positives = (lhs * head_query).sum(-1)
        lhs_side = _own_blocks(head_query @ lhs_candidates.T, rels, num_relations, count)
        rhs_side = _own_blocks(lhs @ rhs_candidates.T, rels, num_relations, count) + tail_bias.unsqueeze(1)
        ctx.save_for_backward(
            lhs, relation, head_query, rels, lhs_index, rhs_index, lhs_candidates, rhs_candidates
        )
        ctx.relations_shape = relations.shape
        # The queries are only used with global negatives: without, their gradients stay None
        # instead of being materialized as zeros and added.
        ctx.set_materialize_grads(False)
        return positives, lhs_side, rhs_side, head_query, tail_bias

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_positives: Optional[torch.Tensor],
        grad_lhs_side: Optional[torch.Tensor],
        grad_rhs_side: Optional[torch.Tensor],
        grad_head_query_out: Optional[torch.Tensor],
        grad_tail_bias_out: Optional[torch.Tensor],
    ) -> tuple[Optional[torch.Tensor], ...]:
        (lhs, relation, head_query, rels, lhs_index, rhs_index, lhs_candidates, rhs_candidates) = ctx.saved_tensors
        num_relations = ctx.relations_shape[0]
        size, count = lhs.shape[0], lhs_index.shape[0] // num_relations
        weight = (grad_positives if grad_positives is not None else lhs.new_zeros(size)).unsqueeze(1)
        lhs_side = grad_lhs_side if grad_lhs_side is not None else lhs.new_zeros(size, count)
        rhs_side = grad_rhs_side if grad_rhs_side is not None else lhs.new_zeros(size, count)
        lhs_grads = _spread(lhs_side.contiguous(), rels, num_relations)  # [B, R * N]
        rhs_grads = _spread(rhs_side.contiguous(), rels, num_relations)
        grad_tail_bias = rhs_side.sum(1)
        if grad_tail_bias_out is not None:
            grad_tail_bias = grad_tail_bias + grad_tail_bias_out
        bias_weight = grad_tail_bias.unsqueeze(1)
        # Each gradient is written once and accumulated in place.
        grad_head_query = torch.mm(lhs_grads, lhs_candidates).addcmul_(lhs, weight)
        if grad_head_query_out is not None:
            grad_head_query += grad_head_query_out
        grad_lhs = torch.mm(rhs_grads, rhs_candidates).addcmul_(head_query, weight).addcmul_(relation, bias_weight)
        grad_lhs.index_add_(0, lhs_index, lhs_grads.T @ head_query)
        grad_relation_rows = torch.addcmul(grad_head_query, lhs, bias_weight)  # head query and bias terms
        grad_relations = relation.new_zeros(ctx.relations_shape).index_add_(0, rels, grad_relation_rows)
        grad_rhs = grad_head_query.index_add_(0, rhs_index, rhs_grads.T @ lhs)
        return grad_lhs, grad_rhs, grad_relations, None, None, None


def translation_edge_scores(
    lhs: torch.Tensor,
    rhs: torch.Tensor,
    relations: torch.Tensor,
    rels: torch.Tensor,
    lhs_negatives: torch.Tensor,
    rhs_negatives: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """(positives [B], lhs-side [B, N], rhs-side [B, N], head query [B, D], tail bias [B]) of the
    translation operator, for relation vectors `relations` [R, D]; the queries are returned for
    scoring global negatives (head: x . q; tail: x . lhs + bias)."""
    return _TranslationEdgeScores.apply(lhs, rhs, relations, rels, lhs_negatives, rhs_negatives)
