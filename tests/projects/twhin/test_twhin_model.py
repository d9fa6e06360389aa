import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tml.projects.twhin.data.edges import edges_to_batch, edges_to_batches
from tml.projects.twhin.metrics import unwrap_twhin_model
from tml.projects.twhin.data.reader import EdgeArrays
from tml.projects.twhin.data.schema import GraphSchema
from tml.projects.twhin.models.config import Operator
from tml.projects.twhin.models.losses import logistic_loss, ranking_loss, regularization, softmax_loss
from tml.projects.twhin.models.models import TwhinModel, TwhinModelAndLoss
from tml.projects.twhin.models.operators import OPERATORS
from twhin_helpers import model_config, sharded_model

L, R, X = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0]), torch.tensor([3.0, 4.0])


@pytest.mark.parametrize(
    "operator, expected",
    [
        (Operator.TRANSLATION, 1 * 3.5 + 2 * 3.0),  # l . (x + r)
        (Operator.DOT, 1 * 3 + 2 * 4),
        (Operator.DIAGONAL, 1 * 0.5 * 3 + 2 * -1 * 4),
    ],
)
def test_real_operators_score_as_hand_computed(operator, expected):
    assert OPERATORS[operator].score(L, R, X).item() == pytest.approx(expected)


def test_complex_operator_scores_as_hand_computed():
    # l = (1+3i, 2+4i), r = (0.5+1i, -1+0i), x = (2-1i, 1+2i), stored [real parts | imaginary parts].
    lhs, relation, rhs = torch.tensor([1.0, 2, 3, 4]), torch.tensor([0.5, -1, 1, 0]), torch.tensor([2.0, 1, -1, 2])
    # Re((1+3i)(0.5+i)(2+i)) = Re((-2.5+2.5i)(2+i)) = -7.5 ; Re((2+4i)(-1)(1-2i)) = Re(-2-4i)(1-2i) = -10
    assert OPERATORS[Operator.COMPLEX_DIAGONAL].score(lhs, relation, rhs).item() == pytest.approx(-17.5)
    as_complex = lambda v: torch.complex(v[:2], v[2:])  # noqa: E731
    assert (as_complex(lhs) * as_complex(relation) * as_complex(rhs).conj()).sum().real.item() == pytest.approx(-17.5)


@pytest.mark.parametrize("operator", list(Operator))
def test_head_and_tail_queries_give_the_score(operator):
    torch.manual_seed(0)
    lhs, relation, rhs = torch.randn(5, 6), torch.randn(5, 6), torch.randn(5, 6)
    op = OPERATORS[operator]
    score = op.score(lhs, relation, rhs)
    for (query, bias), other in ((op.tail_query(lhs, relation), rhs), (op.head_query(rhs, relation), lhs)):
        direct = (other * query).sum(-1) + (bias if bias is not None else 0)
        torch.testing.assert_close(direct, score)


def table(model, name):
    return model.large_embeddings.ebc.embedding_bags[name].weight.detach()


def build(operators=("translation", "complex_diagonal"), relation_aware=False, loss=None, seed=0):
    torch.manual_seed(seed)
    config = model_config(operators=operators)
    config = config.model_copy(update={"relation_aware": relation_aware,
                                       **({"loss": config.loss.model_validate(loss)} if loss else {})})
    model = TwhinModel(config, device="cpu")
    with torch.no_grad():  # relation vectors away from their operator's neutral start
        if model.all_trans_embs is not None:
            model.all_trans_embs.normal_()
    return model, GraphSchema.from_model_config(config)


# user -> tweet (fav) edges of one table pair: 8 edges, chunks of 4.
FAV = EdgeArrays.from_lists(lhs=[1, 2, 3, 4, 5, 6, 7, 8], rel=[0] * 8, rhs=[3, 4, 5, 6, 7, 8, 9, 10],
                            weight=[1.0, 2.0, 0.5, 1.0, 1.0, 1.0, 3.0, 1.0])


def fav_batch(schema, seed=0):
    return edges_to_batch(FAV, schema, in_batch_negatives=3, global_negatives=2, chunk_size=4,
                          rng=np.random.default_rng(seed))


@pytest.mark.parametrize("relation_aware", [False, True])
@pytest.mark.parametrize("operators", [("translation", "translation"), ("complex_diagonal", "diagonal")])
def test_chunk_scores_are_the_operator_scores_of_every_candidate(operators, relation_aware):
    model, schema = build(operators, relation_aware)
    batch = fav_batch(schema)
    scores = model(batch)
    users, tweets = table(model, "user"), table(model, "tweet")
    lhs_ids, rhs_ids = batch.side_ids("lhs"), batch.side_ids("rhs")
    rel = torch.tensor(0)
    head_query, head_bias = model.head_query(tweets[rhs_ids[:, :4]], torch.zeros(2, 4, dtype=torch.long))
    for k in range(2):
        for i in range(4):
            lhs, rhs = users[lhs_ids[k, i]], tweets[rhs_ids[k, i]]
            for j in range(6):  # the chunk's 4 edge nodes, then its 2 uniform draws: the same for every edge
                tail = model.score(lhs, rel, tweets[rhs_ids[k, j]])
                head = (users[lhs_ids[k, j]] * head_query[k, i]).sum() + head_bias[k, i]
                assert scores.negative_rhs[k, i, j].item() == pytest.approx(tail.item(), abs=1e-5)
                assert scores.negative_lhs[k, i, j].item() == pytest.approx(head.item(), abs=1e-5)
            assert scores.positive_rhs[k, i].item() == pytest.approx(model.score(lhs, rel, rhs).item(), abs=1e-5)
            assert scores.positive_lhs[k, i].item() == pytest.approx(scores.negative_lhs[k, i, i].item(), abs=1e-5)
    if not relation_aware:  # one score per edge, however it is factored
        torch.testing.assert_close(scores.positive_lhs, scores.positive_rhs)


def test_relation_aware_translation_ranks_tails_by_relation():
    """The original's translation l . (x + r) ranks tails by l . x whatever r; reciprocal relations
    give the tail side a vector of its own."""
    lhs = torch.randn(1, 8)
    for aware, depends in ((False, False), (True, True)):
        model, _ = build(("translation", "translation"), relation_aware=aware)
        queries = [model.tail_query(lhs, torch.tensor([rel]))[0] for rel in (0, 1)]
        assert (not torch.allclose(*queries)) == depends
        assert model.all_trans_embs.shape == ((4 if aware else 2), 8)


def test_uniform_negatives_are_shared_by_a_chunk_and_cost_two_lookups_per_edge_per_chunk():
    _, schema = build()
    edges = EdgeArrays.from_lists(lhs=list(range(20)), rel=[0] * 20, rhs=list(range(20)))
    batch = edges_to_batch(edges, schema, in_batch_negatives=10, global_negatives=50, chunk_size=10)
    # 100 negatives per side and edge (10 in-batch + 50 uniform, twice) from 2 x (10 + 50) lookups per chunk.
    assert batch.nodes.length_per_key() == [2 * 60, 2 * 60]
    assert batch.layout.negatives_per_edge.tolist() == [59] * 10  # own node masked
    draws = batch.side_ids("rhs")[:, 10:]
    assert draws.shape == (2, 50) and not torch.equal(draws[0], draws[1])


def by_hand(scores, kind, margin=0.1):
    """The loss summed pair by pair from its definition."""
    chunks, size, block = scores.negative_lhs.shape
    total, pairs = 0.0, 0
    for k in range(chunks):
        for i in range(size):
            w = scores.weights[k, i].item()
            negatives = [j for j in range(block) if scores.mask[i, j]]
            for positive, negative in ((scores.positive_lhs[k, i], scores.negative_lhs[k, i]),
                                       (scores.positive_rhs[k, i], scores.negative_rhs[k, i])):
                p, n = positive.item(), [negative[j].item() for j in negatives]
                if kind == "logistic":  # each side: half the positive's BCE, the negatives share w / 2
                    total += w * 0.5 * np.log1p(np.exp(-p)) + sum(w / (2 * len(n)) * np.log1p(np.exp(v)) for v in n)
                elif kind == "softmax":
                    total += w * (np.log(np.exp(p) + sum(np.exp(v) for v in n)) - p)
                else:
                    total += w * sum(max(0.0, margin - p + v) for v in n)
            pairs += 1 + 2 * len(negatives)
    return total / (pairs if kind == "logistic" else chunks * size)


@pytest.mark.parametrize("relation_aware", [False, True])
@pytest.mark.parametrize("kind, loss_fn", [("logistic", logistic_loss), ("softmax", softmax_loss),
                                           ("ranking", ranking_loss)])
def test_each_loss_equals_its_hand_computation(kind, loss_fn, relation_aware):
    model, schema = build(("translation", "diagonal"), relation_aware, loss={"kind": kind, "margin": 0.5})
    scores = model(fav_batch(schema))
    expected = by_hand(scores, kind, margin=0.5)
    assert loss_fn(scores, margin=0.5).item() == pytest.approx(expected, rel=1e-5)
    loss, outputs = TwhinModelAndLoss(model)(fav_batch(schema))
    assert loss.item() == pytest.approx(expected, rel=1e-5) and outputs["loss"].item() == loss.item()


def test_logistic_loss_is_the_weighted_bce_mean_over_all_scored_pairs():
    model, schema = build()
    model.eval()
    loss, outputs = TwhinModelAndLoss(model).eval()(fav_batch(schema))
    logits, labels, weights = outputs["logits"], outputs["labels"], outputs["weights"]
    kept = (labels == 1) | (weights > 0)  # pairs that are no negative (an edge's own node) weigh nothing
    bce = -(weights * (labels * F.logsigmoid(logits) + (1 - labels) * F.logsigmoid(-logits)))
    assert loss.item() == pytest.approx((bce.sum() / kept.sum()).item(), rel=1e-6)
    # An edge's negatives together weigh as much as the edge (the original's weighting).
    negative_weights = weights[8:].view(2, 2, 4, 6).sum((0, 3)).reshape(-1)
    torch.testing.assert_close(negative_weights, torch.tensor(FAV.weight))


@pytest.mark.parametrize("kind, power", [("l2", 2), ("n3", 3)])
def test_regularisation_penalises_the_touched_rows(kind, power):
    model, schema = build(loss={"kind": "logistic", "regularizer": kind, "regularization_weight": 0.3})
    batch = fav_batch(schema)
    plain = logistic_loss(model(batch))
    loss, _ = TwhinModelAndLoss(model)(batch)
    users, tweets = table(model, "user"), table(model, "tweet")
    lhs, rhs = batch.edge_nodes()
    relation = model.all_trans_embs.detach()[0]
    penalty = sum(w * (users[l].abs() ** power + tweets[r].abs() ** power + relation.abs() ** power).sum()
                  for l, r, w in zip(lhs.tolist(), rhs.tolist(), FAV.weight.tolist())) / 8
    assert loss.item() == pytest.approx(plain.item() + 0.3 * penalty.item(), rel=1e-5)


def test_padding_edges_add_nothing():
    model, schema = build()
    full = TwhinModelAndLoss(model)(fav_batch(schema))[0]
    batch = fav_batch(schema)
    batch.weights[5] = 0.0  # as a padding edge: its positive and its negatives weigh 0
    scores = model(batch)
    hand = by_hand(scores, "logistic")
    assert logistic_loss(scores).item() == pytest.approx(hand, rel=1e-5) and hand < full.item()


def test_dot_only_model_has_no_relation_parameter():
    model, _ = build(operators=("dot", "dot"))
    assert model.all_trans_embs is None


def test_relation_vectors_train_and_change_after_a_step(process_group):
    config = model_config(operators=("translation", "diagonal"))
    schema = GraphSchema.from_model_config(config)
    model, optimizer, scheduler = sharded_model(config)
    twhin = unwrap_twhin_model(model)
    before = twhin.all_trans_embs.detach().clone()
    edges = EdgeArrays.from_lists(lhs=[1, 2, 3, 4], rel=[0, 0, 1, 1], rhs=[3, 4, 5, 6])
    for batch in edges_to_batches(edges, schema, 2, in_batch_negatives=2, rng=np.random.default_rng(0)):
        loss, _ = model(batch)
        optimizer.zero_grad()
        loss.backward()
        assert twhin.all_trans_embs.grad.abs().sum() > 0  # not detached (B3)
        optimizer.step()
        scheduler.step()
    changed = (twhin.all_trans_embs.detach() - before).abs().sum(1)
    assert (changed > 0).all()
