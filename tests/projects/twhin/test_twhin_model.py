import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tml.projects.twhin.data.edges import edges_to_batch
from tml.projects.twhin.metrics import unwrap_twhin_model
from tml.projects.twhin.data.reader import EdgeArrays
from tml.projects.twhin.data.schema import GraphSchema
from tml.projects.twhin.models.config import Operator
from tml.projects.twhin.models.models import TwhinModel, TwhinModelAndLoss
from tml.projects.twhin.models.gathered_dots import gathered_dots
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


def plain_model(operators=("translation", "complex_diagonal")):
    torch.manual_seed(0)
    config = model_config(operators=operators)
    model = TwhinModel(config, device="cpu")
    return model, GraphSchema.from_model_config(config)


EDGES = EdgeArrays.from_lists(lhs=[1, 2, 3, 4, 5, 6], rel=[0, 0, 1, 1, 0, 1], rhs=[3, 4, 5, 6, 7, 8],
                              weight=[1.0, 2.0, 1.0, 1.0, 0.5, 1.0])


def test_positives_use_their_relations_operator():
    model, schema = plain_model()
    out = model(edges_to_batch(EDGES, schema))
    users, tweets = table(model, "user"), table(model, "tweet")
    relations = model.all_trans_embs.detach()
    for i in range(6):
        lhs = users[EDGES.lhs[i]]
        if EDGES.rel[i] == 0:  # fav: user -> tweet, translation
            expected = (lhs * (tweets[EDGES.rhs[i]] + relations[0])).sum()
        else:  # follow: user -> user, ComplEx
            expected = OPERATORS[Operator.COMPLEX_DIAGONAL].score(lhs, relations[1], users[EDGES.rhs[i]])
        assert out["logits"][i].item() == pytest.approx(expected.item(), abs=1e-6)


def test_negatives_are_labelled_zero_and_weigh_as_much_as_their_edge():
    model, schema = plain_model()
    batch = edges_to_batch(EDGES, schema, in_batch_negatives=3, global_negatives=2, rng=np.random.default_rng(0))
    out = model(batch)
    size, per_edge = 6, 2 * 3 + 2 * 2
    assert out["logits"].shape == (size * (1 + per_edge),)
    assert out["labels"][:size].tolist() == [1.0] * size
    assert out["labels"][size:].eq(0).all()  # the original labelled them 1 (B2)
    negative_weights = out["weights"][size:]
    groups = [negative_weights[: 18].view(6, 3), negative_weights[18:36].view(6, 3),
              negative_weights[36:48].view(6, 2), negative_weights[48:].view(6, 2)]
    torch.testing.assert_close(sum(g.sum(1) for g in groups), torch.tensor(EDGES.weight))
    # Edge 1 (fav, weight 2): fav has 3 edges, so its 3 shared negatives per side are all of them,
    # itself included; it is skipped (weight 0), leaving 2 + 2 in-batch and 2 + 2 global negatives.
    own = batch.lhs_negatives[0] == 1
    assert own.sum() == 1 and (batch.rhs_negatives[0] == 1).sum() == 1
    torch.testing.assert_close(groups[0][1], torch.where(own, 0.0, 2.0 / 8))


def test_negatives_are_scored_with_the_relations_operator():
    model, schema = plain_model()
    batch = edges_to_batch(EDGES, schema, in_batch_negatives=2, global_negatives=2, rng=np.random.default_rng(1))
    logits = model(batch)["logits"]
    users, tweets = table(model, "user"), table(model, "tweet")
    rhs_table = {0: tweets, 1: users}
    _, ids = batch.lookups()
    score = lambda l, rel, x: model.score(l, torch.tensor(rel), x).item()  # noqa: E731
    for i in range(6):
        rel, lhs, rhs = int(EDGES.rel[i]), users[EDGES.lhs[i]], rhs_table[int(EDGES.rel[i])][EDGES.rhs[i]]
        for k in range(2):
            j = int(batch.lhs_negatives[rel, k])  # shared by the relation's edges
            assert logits[6 + 2 * i + k].item() == pytest.approx(score(users[EDGES.lhs[j]], rel, rhs), abs=1e-6)
            j = int(batch.rhs_negatives[rel, k])
            assert logits[18 + 2 * i + k].item() == pytest.approx(
                score(lhs, rel, rhs_table[rel][EDGES.rhs[j]]), abs=1e-6)
            sampled_lhs = ids[12 + 2 * i + k]
            assert logits[30 + 2 * i + k].item() == pytest.approx(score(users[sampled_lhs], rel, rhs), abs=1e-6)
            sampled_rhs = ids[24 + 2 * i + k]
            assert logits[42 + 2 * i + k].item() == pytest.approx(score(lhs, rel, rhs_table[rel][sampled_rhs]), abs=1e-6)


def test_edge_alone_in_its_relation_gets_no_in_batch_negative():
    model, schema = plain_model()
    edges = EdgeArrays.from_lists(lhs=[1, 2, 3], rel=[0, 0, 1], rhs=[3, 4, 5])
    out = model(edges_to_batch(edges, schema, in_batch_negatives=2, rng=np.random.default_rng(0)))
    weights = out["weights"][3:].view(2, 3, 2)
    assert weights[:, 2].eq(0).all() and weights[:, :2].sum().item() == pytest.approx(2.0)


def test_loss_is_the_weighted_bce_mean_over_all_pairs():
    model, schema = plain_model()
    batch = edges_to_batch(EDGES, schema, in_batch_negatives=2, rng=np.random.default_rng(2))
    loss, outputs = TwhinModelAndLoss(model)(batch)
    logits, labels, weights = outputs["logits"], outputs["labels"], outputs["weights"]
    by_hand = -(weights * (labels * F.logsigmoid(logits) + (1 - labels) * F.logsigmoid(-logits))).mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert outputs["loss"].item() == loss.item()


def test_dot_only_model_has_no_relation_parameter():
    model, _ = plain_model(operators=("dot", "dot"))
    assert model.all_trans_embs is None


def test_relation_vectors_train_and_change_after_a_step(process_group):
    config = model_config(operators=("translation", "diagonal"))
    schema = GraphSchema.from_model_config(config)
    model, optimizer, scheduler = sharded_model(config)
    twhin = unwrap_twhin_model(model)
    before = twhin.all_trans_embs.detach().clone()
    loss, _ = model(edges_to_batch(EDGES, schema, in_batch_negatives=2, rng=np.random.default_rng(0)))
    optimizer.zero_grad()
    loss.backward()
    assert twhin.all_trans_embs.grad.abs().sum() > 0  # not detached (B3)
    optimizer.step()
    scheduler.step()
    changed = (twhin.all_trans_embs.detach() - before).abs().sum(1)
    assert (changed > 0).all()


def test_without_negatives_only_positives_are_scored():
    model, schema = plain_model()
    out = model(edges_to_batch(EDGES, schema))
    assert out["logits"].shape == (6,) and out["labels"].eq(1).all()
    torch.testing.assert_close(out["weights"], torch.tensor(EDGES.weight))


def test_per_edge_scoring_of_shared_negatives_equals_the_all_relations_gemm(monkeypatch):
    from tml.projects.twhin.models import models as models_module

    batch = edges_to_batch(EDGES, plain_model()[1], in_batch_negatives=3, global_negatives=1, rng=np.random.default_rng(2))
    results = []
    for limit in (models_module.SCORE_ALL_CANDIDATES_UP_TO, 0):  # 0: too many candidates -> per-edge gathers
        monkeypatch.setattr(models_module, "SCORE_ALL_CANDIDATES_UP_TO", limit)
        gathers = []
        monkeypatch.setattr(models_module, "gathered_dots", lambda *args: gathers.append(1) or gathered_dots(*args))
        model, _ = plain_model()
        out = model(batch)
        assert len(gathers) == (0 if limit else 2)  # the path under test was taken
        F.binary_cross_entropy_with_logits(out["logits"], out["labels"], out["weights"]).backward()
        grads = [param.grad.clone() for param in model.parameters()]
        results.append((out["logits"].detach(), out["weights"], grads))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    for gemm, per_edge in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(gemm, per_edge)


def test_side_blocks_path_equals_the_general_gather():
    """user -> tweet only (plus an unused table): lookups are read as blocks of the pooled output;
    the same batch through the general gather gives the same logits and gradients."""
    tables = {"user": 10, "tweet": 12, "topic": 3}
    relations = [("fav", "user", "tweet"), ("reply", "user", "tweet")]
    config = model_config(operators=("translation", "diagonal"), tables=tables, relations=relations)
    schema = GraphSchema.from_model_config(config)
    edges = EdgeArrays.from_lists(lhs=[1, 2, 3, 4, 5, 9], rel=[0, 0, 1, 1, 0, 1], rhs=[3, 4, 5, 6, 7, 11])
    batch = edges_to_batch(edges, schema, in_batch_negatives=3, global_negatives=2, rng=np.random.default_rng(3))
    results = []
    for side_path in (True, False):
        torch.manual_seed(0)
        model = TwhinModel(config, device="cpu")
        assert model._side_tables == (0, 1)
        if not side_path:
            model._side_tables = None
        out = model(batch)
        F.binary_cross_entropy_with_logits(out["logits"], out["labels"], out["weights"]).backward()
        results.append([out["logits"].detach()] + [param.grad.clone() for param in model.parameters()])
    for side, general in zip(*results):
        torch.testing.assert_close(side, general)
    assert TwhinModel(model_config(), device="cpu")._side_tables is None  # user -> user is not side-aligned


def test_translation_path_equals_the_generic_queries():
    """All relations translation: scored with the operator inside one Function; the same batch
    through the generic query path gives the same logits and gradients (tables and relations)."""
    config = model_config(operators=("translation", "translation"))
    batch = edges_to_batch(EDGES, GraphSchema.from_model_config(config), in_batch_negatives=3, global_negatives=2,
                           rng=np.random.default_rng(4))
    results = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = TwhinModel(config, device="cpu")
        assert model._all_translation
        model._all_translation = fused
        out = model(batch)
        F.binary_cross_entropy_with_logits(out["logits"], out["labels"], out["weights"]).backward()
        results.append([out["logits"].detach()] + [param.grad.clone() for param in model.parameters()])
    for fused, generic in zip(*results):
        torch.testing.assert_close(fused, generic)
    assert not TwhinModel(model_config(operators=("translation", "diagonal")), device="cpu")._all_translation
