"""The TwHIN model: node embeddings in one EmbeddingBagCollection, relation vectors, and the loss.

Fixes against the original: negatives are labelled 0 (B2); relation vectors are a trained parameter
(B3); negatives are scored by the relation's operator exactly like the positives (B4).

A batch comes in PyTorch-BigGraph's layout (`data.edges.ChunkLayout`): chunks of C edges that share
their C + G candidate rows per side. Each side's rows are read from the pooled output by the table's
key (so any sharding plan's key order works) as a [K, C + G, D] block, and every negative score is
part of one batched matrix product: [K, C, D] queries x [K, D, C + G] candidates.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from tml.common.modules.embedding.embedding import LargeEmbeddings
from tml.projects.twhin.data.edges import SIDES, EdgeBatch
from tml.projects.twhin.models.config import Operator, TwhinModelConfig
from tml.projects.twhin.models.losses import LOSSES, ChunkScores, regularization
from tml.projects.twhin.models.operators import OPERATORS, Query, ScoringOperator

# The relation vectors' parameter name (the original's). With reciprocal relations it holds 2R rows:
# relation r, then relation r read backwards at row R + r.
TRANSLATION_PARAM = "all_trans_embs"


class TwhinModel(nn.Module):
    """forward(EdgeBatch) -> ChunkScores. `head_query` / `tail_query` give the query vectors that
    rank every lhs / rhs candidate of an edge; training and link-prediction evaluation share them."""

    def __init__(
        self,
        model_config: TwhinModelConfig,
        data_config: object = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> None:
        """`device=None` leaves the tables on the meta device for sharding; "cpu" builds them."""
        super().__init__()
        del data_config  # kept for the original's signature: negatives now come with each batch
        self.config = model_config
        self.table_names = model_config.table_names
        self.embedding_dim = model_config.embedding_dim
        self.relation_aware = model_config.relation_aware
        self.num_relations = len(model_config.relations)
        self._regularized = model_config.loss.regularization_weight > 0
        self.large_embeddings = LargeEmbeddings(model_config.embeddings, device=device)
        kinds = [relation.operator for relation in model_config.relations]
        self._operator_kinds: list[Operator] = list(dict.fromkeys(kinds))
        self._operators: list[ScoringOperator] = [OPERATORS[kind] for kind in self._operator_kinds]
        self.register_buffer(
            "relation_operator",
            torch.tensor([self._operator_kinds.index(kind) for kind in kinds], dtype=torch.long),
            persistent=False,
        )
        self.all_trans_embs: Optional[nn.Parameter] = None
        if any(operator.uses_relation_vector for operator in self._operators):
            initial = torch.stack([OPERATORS[kind].initial_relation_vector(self.embedding_dim) for kind in kinds])
            if self.relation_aware:
                reverse = torch.stack([OPERATORS[kind].initial_relation_vector(self.embedding_dim) for kind in kinds])
                initial = torch.cat([initial, reverse])
            dense_device = None if device is None or torch.device(device).type == "meta" else device
            self.all_trans_embs = nn.Parameter(initial.to(dense_device or "cpu"))

    def _query(self, nodes: torch.Tensor, rels: torch.Tensor, side: str, reverse: bool = False) -> Query:
        """(q, b) for [..., D] nodes and [...] relations (read backwards with `reverse`); b is None
        where every operator's is zero."""
        relation = None
        if self.all_trans_embs is not None:
            rows = rels + self.num_relations if reverse else rels
            relation = self.all_trans_embs.index_select(0, rows.reshape(-1)).view(rels.shape + (-1,))
        if len(self._operators) == 1:
            return getattr(self._operators[0], f"{side}_query")(nodes, relation)
        query, bias = None, None
        for index, operator in enumerate(self._operators):
            this_query, this_bias = getattr(operator, f"{side}_query")(nodes, relation)
            this_bias = this_bias if this_bias is not None else nodes.new_zeros(nodes.shape[:-1])
            if query is None:
                query, bias = this_query, this_bias
            else:
                # Every operator is computed for every edge, so each parameter is used at every step
                # (DDP with a static graph needs that); the right one is then picked per relation.
                mine = self.relation_operator[rels] == index
                query = torch.where(mine.unsqueeze(-1), this_query, query)
                bias = torch.where(mine, this_bias, bias)
        return query, bias

    def _head_query(self, rhs: torch.Tensor, rels: torch.Tensor) -> Query:
        return self._query(rhs, rels, "head")

    def _tail_query(self, lhs: torch.Tensor, rels: torch.Tensor) -> Query:
        if self.relation_aware:  # the reverse relation ranks the rhs as the forward one ranks the lhs
            return self._query(lhs, rels, "head", reverse=True)
        return self._query(lhs, rels, "tail")

    def tail_query(self, lhs: torch.Tensor, rels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, b) with score(lhs, rel, x) = x . q + b for every rhs candidate x."""
        query, bias = self._tail_query(lhs, rels)
        return query, bias if bias is not None else lhs.new_zeros(lhs.shape[:-1])

    def head_query(self, rhs: torch.Tensor, rels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, b) with score(x, rel, rhs) = x . q + b for every lhs candidate x."""
        query, bias = self._head_query(rhs, rels)
        return query, bias if bias is not None else rhs.new_zeros(rhs.shape[:-1])

    def score(self, lhs: torch.Tensor, rels: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        """Score of edges as rhs candidates see it (with reciprocal relations, the reverse relation's)."""
        query, bias = self.tail_query(lhs, rels)
        return (rhs * query).sum(-1) + bias

    def _relation_rows(self, rels: torch.Tensor) -> list[torch.Tensor]:
        if self.all_trans_embs is None:
            return []
        rows = [self.all_trans_embs[rels]]
        return rows + [self.all_trans_embs[rels + self.num_relations]] if self.relation_aware else rows

    def forward(self, batch: EdgeBatch) -> ChunkScores:
        embedded = self.large_embeddings(batch.nodes)
        if is_fx_symbolic_tracing():
            # torchrec's pipelines trace the forward only to find what feeds the lookups.
            return embedded.values()  # type: ignore[return-value]
        layout = batch.layout
        chunks, size = layout.num_chunks, layout.chunk_size
        blocks = {}  # side -> [K, C + G, D]: each chunk's edge nodes, then its uniform draws
        for table, rows in embedded.to_dict().items():
            # Split, not sliced: a split's backward is one concatenation, a slice's a zero-filled copy.
            sides = layout.sides_of(table)
            if sides:
                used = layout.side_lookups * len(sides)
                parts = rows.split([layout.side_lookups] * len(sides) + [rows.shape[0] - used])
                for side, part in zip(sides, parts):
                    blocks[side] = part.view(chunks, layout.block_size, self.embedding_dim).float()
        lhs = blocks["lhs"].split([size, layout.uniform_negatives], 1)[0]
        rhs = blocks["rhs"].split([size, layout.uniform_negatives], 1)[0]
        rels = batch.rels.view(chunks, size)
        head_query, head_bias = self._head_query(rhs, rels)  # ranks lhs candidates
        tail_query, tail_bias = self._tail_query(lhs, rels)  # ranks rhs candidates
        negative_lhs = torch.bmm(head_query, blocks["lhs"].transpose(1, 2))
        negative_rhs = torch.bmm(tail_query, blocks["rhs"].transpose(1, 2))
        positive_lhs = (lhs * head_query).sum(-1)
        if head_bias is not None:
            positive_lhs, negative_lhs = positive_lhs + head_bias, negative_lhs + head_bias.unsqueeze(-1)
        if tail_bias is not None:
            negative_rhs = negative_rhs + tail_bias.unsqueeze(-1)
        if self.relation_aware:
            positive_rhs = (rhs * tail_query).sum(-1)
            positive_rhs = positive_rhs if tail_bias is None else positive_rhs + tail_bias
        else:
            positive_rhs = positive_lhs  # one score per edge: the two queries are its two factorings
        return ChunkScores(
            positive_lhs=positive_lhs,
            positive_rhs=positive_rhs,
            negative_lhs=negative_lhs,
            negative_rhs=negative_rhs,
            mask=layout.negative_mask.to(negative_lhs.device),
            negatives_per_edge=layout.negatives_per_edge.to(negative_lhs.device),
            weights=batch.weights.view(chunks, size),
            # Gathered only when a regulariser reads them: the relation rows cost a gather per step.
            touched=[lhs, rhs] + self._relation_rows(rels) if self._regularized else [],
        )


class TwhinModelAndLoss(nn.Module):
    """forward(batch) -> (loss, outputs): the loss chosen in the model config (plus the optional
    regularisation of the rows the batch touches). In eval mode the outputs also hold every scored
    pair's logit, label, weight and probability (what the AUC metric reads)."""

    def __init__(
        self,
        model: TwhinModel,
        loss_fn: object = None,
        data_config: object = None,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        del data_config, device  # the original's signature; nothing depends on them any more
        if loss_fn not in (None, F.binary_cross_entropy_with_logits):
            raise ValueError("TwhinModelAndLoss takes its loss from model.loss in the config; pass no loss_fn.")
        self.model = model
        self.loss_config = model.config.loss
        self.loss_fn = LOSSES[self.loss_config.kind]

    def forward(self, batch: EdgeBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        scores = self.model(batch)
        if is_fx_symbolic_tracing():
            return scores.sum(), {}  # type: ignore[attr-defined]
        loss = self.loss_fn(scores, margin=self.loss_config.margin)
        if self.loss_config.regularization_weight > 0:
            penalty = regularization(scores.touched, scores.weights, self.loss_config.regularizer)
            loss = loss + self.loss_config.regularization_weight * penalty
        outputs = {"loss": loss.detach()}
        if not self.training:
            outputs.update(scored_pairs(scores))
        return loss, outputs


def scored_pairs(scores: ChunkScores) -> dict[str, torch.Tensor]:
    """Every scored pair flattened (positives, then lhs-side and rhs-side negatives), with labels and
    the logistic loss's weights (0 where a block row is no negative)."""
    positives = scores.positive_lhs.reshape(-1)
    negative_weights = scores.negative_weights().reshape(-1)
    logits = torch.cat([positives, scores.negative_lhs.reshape(-1), scores.negative_rhs.reshape(-1)])
    labels = torch.cat([torch.ones_like(positives), torch.zeros_like(logits[positives.numel() :])])
    weights = torch.cat([scores.weights.reshape(-1), negative_weights, negative_weights])
    return {"logits": logits.detach(), "labels": labels, "weights": weights.detach(),
            "probabilities": torch.sigmoid(logits.detach())}
