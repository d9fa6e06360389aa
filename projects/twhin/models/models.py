"""The TwHIN model: node embeddings in one EmbeddingBagCollection, relation vectors, and the loss.

Fixes against the original: negatives are labelled 0 (B2); relation vectors are a trained parameter
(B3); negatives are scored by the relation's operator exactly like the positives (B4).
"""
from __future__ import annotations

import re
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing
from torchrec.sparse.jagged_tensor import KeyedTensor
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from tml.common.modules.embedding.embedding import LargeEmbeddings
from tml.core.optimizers import get_embedding_optimizer, get_learning_rate
from tml.projects.twhin.data.edges import EdgeBatch
from tml.projects.twhin.models.config import Operator, TwhinModelConfig
from tml.projects.twhin.models.edge_scores import edge_scores, translation_edge_scores
from tml.projects.twhin.models.gathered_dots import gathered_dots
from tml.projects.twhin.models.operators import OPERATORS, ScoringOperator
from tml.projects.twhin.models.pooled_rows import take_rows, take_side_blocks

# torchrec's pipelines trace the forward with torch.fx: the custom autograd functions stay one call.
torch.fx.wrap("gathered_dots")
torch.fx.wrap("edge_scores")
torch.fx.wrap("translation_edge_scores")
torch.fx.wrap("take_rows")
torch.fx.wrap("take_side_blocks")

# Up to this many in-batch candidates per side (relations x in-batch negatives), every edge is scored
# against all of them with one GEMM and keeps its own relation's block (R times more scores than
# needed, but at GEMM speed; `edge_scores`); beyond, per edge (`gathered_dots`).
SCORE_ALL_CANDIDATES_UP_TO = 512

# The relation vectors' parameter name (the original's).
TRANSLATION_PARAM = "all_trans_embs"
_TABLE_WEIGHT = re.compile(r"(?:^|\.)embedding_bags\.([^.]+)\.weight$")


def table_of_parameter(name: str) -> Optional[str]:
    """The table whose weight a (state-dict or parameter) name denotes, else None."""
    match = _TABLE_WEIGHT.search(name)
    return match.group(1) if match else None


# torchrec fuses tables with equal optimizer settings into one kernel, which then has ONE learning
# rate. Tables that share settings and schedule keep sharing a kernel (one per step is cheaper
# than two); where settings are equal but schedules differ, this fused param gives each table its
# own kernel (its own param group), so each follows its schedule.
_ONE_KERNEL_PER_TABLE = "use_one_tbe_per_table"


def _gather(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """rows[index] as [*index.shape, D]. On CPU index_select is several times faster than advanced
    indexing, forward (a plain copy) and backward (index_add instead of an accumulating index_put)."""
    return rows.index_select(0, index.reshape(-1)).view(index.shape + rows.shape[-1:])


def _dots(candidates: torch.Tensor, query: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    """[B, k] scores candidates[b, i] . query[b] + bias[b]. A product and a sum: einsum would run B
    tiny matrix products (bmm), about three times slower on CPU."""
    scores = (candidates * query.unsqueeze(1)).sum(-1)
    return scores if bias is None else scores + bias.unsqueeze(1)


class TwhinModel(nn.Module):
    """forward(EdgeBatch) -> {"logits", "labels", "weights"} over the positives followed by their
    negatives (in-batch lhs-side, in-batch rhs-side, global lhs-side, global rhs-side; see
    `EdgeBatch`), plus "probabilities" in eval mode. Negatives of an edge together weigh as much as
    the edge itself (the batch carries the labels and weights of every scored pair).
    """

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
        self.large_embeddings = LargeEmbeddings(model_config.embeddings, device=device)
        kinds = [relation.operator for relation in model_config.relations]
        self._operator_kinds: list[Operator] = list(dict.fromkeys(kinds))
        self._operators: list[ScoringOperator] = [OPERATORS[kind] for kind in self._operator_kinds]
        self.register_buffer(
            "relation_operator",
            torch.tensor([self._operator_kinds.index(kind) for kind in kinds], dtype=torch.long),
            persistent=False,
        )
        self._all_translation = self._operator_kinds == [Operator.TRANSLATION]
        self._num_tables = len(self.table_names)
        self._positions_by_keys: dict[tuple[str, ...], tuple[int, ...]] = {}
        # Every relation from one table to another one: lookups need no gather (see `_edge_rows`).
        lhs_tables = {self.table_names.index(relation.lhs) for relation in model_config.relations}
        rhs_tables = {self.table_names.index(relation.rhs) for relation in model_config.relations}
        self._side_tables: Optional[tuple[int, int]] = None
        if len(lhs_tables) == 1 and len(rhs_tables) == 1 and lhs_tables != rhs_tables:
            self._side_tables = (lhs_tables.pop(), rhs_tables.pop())
        self.all_trans_embs: Optional[nn.Parameter] = None
        if any(operator.uses_relation_vector for operator in self._operators):
            initial = torch.stack([OPERATORS[kind].initial_relation_vector(self.embedding_dim) for kind in kinds])
            dense_device = None if device is None or torch.device(device).type == "meta" else device
            self.all_trans_embs = nn.Parameter(initial.to(dense_device or "cpu"))

    # The two query builders are shared by training and link-prediction evaluation.
    def _query(
        self, nodes: torch.Tensor, rels: torch.Tensor, side: str
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(q, b) for one side; b is None where every operator's bias is zero (no op spent on it)."""
        relation = _gather(self.all_trans_embs, rels) if self.all_trans_embs is not None else None
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

    def tail_query(self, lhs: torch.Tensor, rels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, b) with score(lhs, rel, x) = x . q + b, for [..., D] lhs rows and [...] relations."""
        query, bias = self._query(lhs, rels, "tail")
        return query, bias if bias is not None else lhs.new_zeros(lhs.shape[:-1])

    def head_query(self, rhs: torch.Tensor, rels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(q, b) with score(x, rel, rhs) = x . q + b."""
        query, bias = self._query(rhs, rels, "head")
        return query, bias if bias is not None else rhs.new_zeros(rhs.shape[:-1])

    def score(self, lhs: torch.Tensor, rels: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
        query, bias = self.tail_query(lhs, rels)
        return (rhs * query).sum(-1) + bias

    def _edge_rows(self, batch: EdgeBatch) -> tuple[torch.Tensor, ...]:
        """Rows of (lhs nodes [B], rhs nodes [B], lhs-side [B * G] and rhs-side [B * G] global
        negatives), from the pooled output in the batch's compact layout; taken by position, since
        every table has the same dim."""
        embedded = self.large_embeddings(batch.nodes)
        pooled = embedded.values()
        size = batch.rels.shape[0]
        sampled = (batch.lookup_rows.shape[0] - 2 * size) // 2
        if self._side_tables is not None:
            positions = self._pooled_positions(embedded)
            lhs_table, rhs_table = self._side_tables
            parts = take_side_blocks(pooled, self.embedding_dim, positions[lhs_table], positions[rhs_table], size)
        elif self._num_tables > 1:
            rows = pooled.reshape(-1, self.embedding_dim)
            parts = take_rows(rows, self._pooled_rows(embedded, batch.lookup_rows), [size, size, sampled, sampled])
        else:
            parts = pooled.split([size, size, sampled, sampled])
        # Indexed, not iterated: under fx tracing `parts` is one proxy. fp16 tables score in fp32.
        return parts[0].float(), parts[1].float(), parts[2].float(), parts[3].float()

    # The pooled output's tables come in the sharding plan's order (with several ranks, tables placed
    # on different ranks are grouped by rank), while a batch addresses them in config order.
    def _pooled_positions(self, embedded: KeyedTensor) -> tuple[int, ...]:
        """Position of each table (config order) among the pooled output's keys."""
        if is_fx_symbolic_tracing():  # only the lookups' inputs are traced; any order will do
            return tuple(range(self._num_tables))
        keys = tuple(embedded.keys())
        if keys not in self._positions_by_keys:
            self._positions_by_keys[keys] = tuple(keys.index(name) for name in self.table_names)
        return self._positions_by_keys[keys]

    def _pooled_rows(self, embedded: KeyedTensor, lookup_rows: torch.Tensor) -> torch.Tensor:
        """`lookup_rows` (position * T + table, in config order) in the pooled output's order."""
        positions = self._pooled_positions(embedded)
        if positions == tuple(range(self._num_tables)):
            return lookup_rows
        device = lookup_rows.device
        shift = torch.tensor(positions, device=device) - torch.arange(self._num_tables, device=device)
        return lookup_rows + shift[lookup_rows % self._num_tables]

    def _in_batch_scores(
        self,
        rows: torch.Tensor,
        negatives: torch.Tensor,
        rels: torch.Tensor,
        query: torch.Tensor,
        bias: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """[B, N] scores of each edge against its relation's shared negatives, one gather per edge
        (`negatives` [R, N]: edge indices into `rows`, -1 = none; those weigh 0 in the loss)."""
        scores = gathered_dots(rows, negatives.index_select(0, rels).clamp(min=0), query)
        return scores if bias is None else scores + bias.unsqueeze(1)

    def forward(self, batch: EdgeBatch) -> dict[str, torch.Tensor]:
        # torchrec's pipelines trace this forward with torch.fx (only to find the embedding lookups):
        # while tracing no branch may depend on the batch, so the global-negative scores, skipped
        # when a batch has none, are always in the traced graph.
        size = batch.rels.shape[0]
        lhs, rhs, lhs_sampled, rhs_sampled = self._edge_rows(batch)
        score_all = is_fx_symbolic_tracing() or batch.lhs_negatives.numel() <= SCORE_ALL_CANDIDATES_UP_TO
        if self._all_translation and score_all:
            # The original's operator, with its query math inside the scoring Function.
            edges = translation_edge_scores(
                lhs, rhs, self.all_trans_embs, batch.rels, batch.lhs_negatives, batch.rhs_negatives
            )
            tail_query, tail_bias, head_query, head_bias = lhs, edges[4], edges[3], None
            logits = [edges[0], edges[1], edges[2]]  # indexed: under fx tracing, `edges` cannot be iterated
        else:
            tail_query, tail_bias = self._query(lhs, batch.rels, "tail")
            head_query, head_bias = self._query(rhs, batch.rels, "head")
            if score_all:
                edges = edge_scores(
                    lhs, rhs, tail_query, tail_bias, head_query, head_bias,
                    batch.rels, batch.lhs_negatives, batch.rhs_negatives,
                )
                logits = [edges[0], edges[1], edges[2]]
            else:
                positives = (rhs * tail_query).sum(-1)
                logits = [
                    positives if tail_bias is None else positives + tail_bias,
                    self._in_batch_scores(lhs, batch.lhs_negatives, batch.rels, head_query, head_bias),
                    self._in_batch_scores(rhs, batch.rhs_negatives, batch.rels, tail_query, tail_bias),
                ]
        if is_fx_symbolic_tracing() or lhs_sampled.shape[0] > 0:
            # [B, G, D]: uniform rows of the lhs table, and of the rhs table, G per edge.
            lhs_sampled = lhs_sampled.view(size, -1, self.embedding_dim)
            rhs_sampled = rhs_sampled.view(size, -1, self.embedding_dim)
            logits += [_dots(lhs_sampled, head_query, head_bias), _dots(rhs_sampled, tail_query, tail_bias)]
        all_logits = torch.cat([scores.reshape(-1) for scores in logits])
        outputs = {"logits": all_logits, "labels": batch.pair_labels, "weights": batch.pair_weights}
        if not self.training:  # metrics read them; the training step needs none
            outputs["probabilities"] = torch.sigmoid(all_logits)
        return outputs


def apply_optimizers(model: TwhinModel, model_config: TwhinModelConfig) -> None:
    """Attach each table's optimizer in backward (fused into the embedding kernels once sharded)."""
    tables = model_config.embeddings.tables
    optimizers = {table.name: get_embedding_optimizer(table.optimizer) for table in tables}

    def settings(name: str) -> str:  # what torchrec groups kernels by
        optimizer_class, kwargs = optimizers[name]
        return f"{optimizer_class.__name__}{sorted(kwargs.items())}"

    schedules: dict[str, set[str]] = {}
    for table in tables:
        schedules.setdefault(settings(table.name), set()).add(get_learning_rate(table.optimizer).model_dump_json())
    for table in tables:
        optimizer_class, kwargs = optimizers[table.name]
        params = list(model.large_embeddings.ebc.embedding_bags[table.name].parameters())
        apply_optimizer_in_backward(optimizer_class, params, kwargs)
        if len(schedules[settings(table.name)]) > 1:
            for param in params:
                for fused_kwargs in param._optimizer_kwargs:
                    fused_kwargs[_ONE_KERNEL_PER_TABLE] = True


LossFn = Callable[..., torch.Tensor]


class TwhinModelAndLoss(nn.Module):
    """forward(batch) -> (loss, outputs): the weighted BCE over positives and negatives, averaged
    over all scored pairs (the original's normalisation)."""

    def __init__(
        self,
        model: TwhinModel,
        loss_fn: LossFn = F.binary_cross_entropy_with_logits,
        data_config: object = None,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        del data_config, device  # the original's signature; nothing depends on them any more
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: EdgeBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        outputs = self.model(batch)
        loss = self.loss_fn(outputs["logits"], outputs["labels"], weight=outputs["weights"])
        return loss, {**outputs, "loss": loss.detach()}
