"""Edge scoring operators, each written as a linear function of either endpoint.

For an edge (l, r, x) every operator's score can be written two ways:
    score = x . q_tail(l, r) + b_tail(l, r)     (a query for the rhs side)
    score = l . q_head(x, r) + b_head(x, r)     (a query for the lhs side)
So a positive, any number of negatives replacing one side, and the ranking of a whole table against
one edge are all the same dot products with one query vector: in-batch and global negatives, and
link-prediction evaluation, can never score differently from the positives (the original scored
negatives without the translation).
"""
from __future__ import annotations

import abc
from typing import Optional

import torch

from tml.projects.twhin.models.config import Operator

Query = tuple[torch.Tensor, Optional[torch.Tensor]]  # (q [..., D], bias [...] or None for zero)


class ScoringOperator(abc.ABC):
    uses_relation_vector: bool = True

    @abc.abstractmethod
    def initial_relation_vector(self, dim: int) -> torch.Tensor:
        """[D] starting value of a relation's vector."""

    @abc.abstractmethod
    def tail_query(self, lhs: torch.Tensor, relation: Optional[torch.Tensor]) -> Query:
        """Query scoring rhs candidates x of edges (lhs, relation, x)."""

    @abc.abstractmethod
    def head_query(self, rhs: torch.Tensor, relation: Optional[torch.Tensor]) -> Query:
        """Query scoring lhs candidates x of edges (x, relation, rhs)."""

    def score(self, lhs: torch.Tensor, relation: Optional[torch.Tensor], rhs: torch.Tensor) -> torch.Tensor:
        query, bias = self.tail_query(lhs, relation)
        scores = (rhs * query).sum(-1)
        return scores if bias is None else scores + bias


class Translation(ScoringOperator):
    """The original's l . (x + r) = x . l + l . r: r shifts the rhs, so only head ranking depends on it."""

    def initial_relation_vector(self, dim: int) -> torch.Tensor:
        return torch.rand(dim)  # uniform(0, 1), as in the original

    def tail_query(self, lhs: torch.Tensor, relation: Optional[torch.Tensor]) -> Query:
        return lhs, (lhs * relation).sum(-1)

    def head_query(self, rhs: torch.Tensor, relation: Optional[torch.Tensor]) -> Query:
        return rhs + relation, None


class Dot(ScoringOperator):
    uses_relation_vector = False

    def initial_relation_vector(self, dim: int) -> torch.Tensor:
        return torch.zeros(dim)

    def tail_query(self, lhs: torch.Tensor, relation: Optional[torch.Tensor]) -> Query:
        return lhs, None

    def head_query(self, rhs: torch.Tensor, relation: Optional[torch.Tensor]) -> Query:
        return rhs, None


class Diagonal(ScoringOperator):
    """DistMult: sum(l * r * x). Starts as the plain dot product (r = 1)."""

    def initial_relation_vector(self, dim: int) -> torch.Tensor:
        return torch.ones(dim)

    def tail_query(self, lhs: torch.Tensor, relation: Optional[torch.Tensor]) -> Query:
        return lhs * relation, None

    def head_query(self, rhs: torch.Tensor, relation: Optional[torch.Tensor]) -> Query:
        return rhs * relation, None


def _halves(vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    real, imaginary = vectors.chunk(2, dim=-1)
    return real, imaginary


class ComplexDiagonal(ScoringOperator):
    """ComplEx: Re(sum(l * r * conj(x))), vectors stored as [real half, imaginary half].
    Starts as the plain dot product (r = 1 + 0i)."""

    def initial_relation_vector(self, dim: int) -> torch.Tensor:
        return torch.cat([torch.ones(dim // 2), torch.zeros(dim - dim // 2)])

    def tail_query(self, lhs: torch.Tensor, relation: Optional[torch.Tensor]) -> Query:
        # score = x_re * Re(l r) + x_im * Im(l r)
        (l_re, l_im), (r_re, r_im) = _halves(lhs), _halves(relation)
        return torch.cat([l_re * r_re - l_im * r_im, l_re * r_im + l_im * r_re], -1), None

    def head_query(self, rhs: torch.Tensor, relation: Optional[torch.Tensor]) -> Query:
        # w = r conj(x); score = Re(l w) = l_re * Re(w) - l_im * Im(w)
        (x_re, x_im), (r_re, r_im) = _halves(rhs), _halves(relation)
        w_re = r_re * x_re + r_im * x_im
        w_im = r_im * x_re - r_re * x_im
        return torch.cat([w_re, -w_im], -1), None


OPERATORS: dict[Operator, ScoringOperator] = {
    Operator.TRANSLATION: Translation(),
    Operator.DOT: Dot(),
    Operator.DIAGONAL: Diagonal(),
    Operator.COMPLEX_DIAGONAL: ComplexDiagonal(),
}
