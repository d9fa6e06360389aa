import numpy as np
import pytest
import torch

from tml.common.checkpointing import save_state
from tml.common.testing_utils import run_on_ranks
from tml.projects.twhin.data.reader import EdgeArrays
from tml.projects.twhin.data.schema import GraphSchema
from tml.projects.twhin.metrics import EdgeAuc, LinkPredictionRanks, link_prediction_ranks
from tml.projects.twhin.models.models import TwhinModel, TwhinModelAndLoss
from rank_fns_twhin import ranks_from_checkpoint
from twhin_helpers import model_config

CONFIG = model_config(operators=("translation", "complex_diagonal"), tables={"user": 12, "tweet": 9})
SCHEMA = GraphSchema.from_model_config(CONFIG)
rng = np.random.default_rng(0)
KNOWN = EdgeArrays.from_lists(lhs=rng.integers(0, 12, 60), rel=rng.integers(0, 2, 60), rhs=rng.integers(0, 9, 60))
EVAL = EdgeArrays.from_lists(lhs=rng.integers(0, 12, 11), rel=rng.integers(0, 2, 11), rhs=rng.integers(0, 9, 11))


def plain_model():
    torch.manual_seed(3)
    return TwhinModel(CONFIG, device="cpu")


def brute_force_ranks(model, edges, known, filtered):
    """Every candidate scored one at a time with model.score, filtering with Python sets."""
    tables = {name: model.large_embeddings.ebc.embedding_bags[name].weight.detach() for name in ("user", "tweet")}
    rhs_table = {0: "tweet", 1: "user"}
    truth = set(zip(known.lhs.tolist(), known.rel.tolist(), known.rhs.tolist())) | set(
        zip(edges.lhs.tolist(), edges.rel.tolist(), edges.rhs.tolist()))
    tails, heads = [], []
    for h, r, t in zip(edges.lhs.tolist(), edges.rel.tolist(), edges.rhs.tolist()):
        score = lambda l_id, x_id: model.score(  # noqa: E731
            tables["user"][l_id].double(), torch.tensor(r), tables[rhs_table[r]][x_id].double()).item()
        for ranks, candidates, make in (
            (tails, range(CONFIG.table_sizes[rhs_table[r]]), lambda c: (h, r, c)),
            (heads, range(12), lambda c: (c, r, t)),
        ):
            true_score = score(h, t)
            higher = equal = 0
            for c in candidates:
                edge = make(c)
                if edge == (h, r, t) or (filtered and edge in truth):
                    continue
                s = score(edge[0], edge[2])
                higher += s > true_score + 1e-9
                equal += abs(s - true_score) <= 1e-9
            ranks.append(1 + higher + equal / 2)
    return np.array(tails), np.array(heads)


@pytest.mark.parametrize("filtered", [True, False])
def test_ranks_match_a_brute_force_computation(filtered):
    model = plain_model()
    result = link_prediction_ranks(model, EVAL, SCHEMA, KNOWN if filtered else None, query_chunk_size=4, entity_chunk_size=5)
    tails, heads = brute_force_ranks(model, EVAL, KNOWN, filtered)
    np.testing.assert_array_equal(result.tail, tails)
    np.testing.assert_array_equal(result.head, heads)
    if filtered:
        unfiltered = link_prediction_ranks(model, EVAL, SCHEMA)
        assert (unfiltered.tail >= result.tail).all() and (unfiltered.tail > result.tail).any()


def test_ties_count_half():
    model = TwhinModel(model_config(operators=("dot", "dot"), tables={"user": 4, "tweet": 4}), device="cpu")
    schema = GraphSchema.from_model_config(model.config)
    unit = torch.eye(1, 8)
    tables = {"user": unit.repeat(4, 1), "tweet": torch.cat([2 * unit, unit, unit, 0 * unit])}
    edges = EdgeArrays.from_lists(lhs=[0], rel=[0], rhs=[1])
    result = link_prediction_ranks(model, edges, schema, tables=tables)
    # tail: scores 2, [1], 1, 0: one higher and one tie -> 1 + 1 + 1/2; head: all four users tie -> 1 + 3/2.
    assert result.tail.tolist() == [2.5] and result.head.tolist() == [2.5]


def test_metrics_from_ranks():
    ranks = LinkPredictionRanks(tail=np.array([1.0, 2.0, 20.0]), head=np.array([1.0, 4.0, 10.0]))
    metrics = ranks.metrics(hits_at=(1, 10))
    assert metrics["mrr"] == pytest.approx((1 + 0.5 + 0.05 + 1 + 0.25 + 0.1) / 6)
    assert metrics["mrr_tail"] == pytest.approx((1 + 0.5 + 0.05) / 3)
    assert metrics["hits@1"] == pytest.approx(2 / 6) and metrics["hits@10"] == pytest.approx(5 / 6)
    assert metrics["mean_rank"] == pytest.approx(38 / 6)


def test_auc_leaves_out_pairs_of_weight_zero():
    auc = EdgeAuc(4000, generator=torch.Generator().manual_seed(0))
    logits = torch.tensor([2.0, 3.0, 0.0, 1.0, 10.0])
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    auc.update({"logits": logits, "labels": labels, "weights": torch.tensor([1.0, 1.0, 0.5, 0.5, 0.0])})
    assert auc.compute().item() == 1.0  # the weight-0 negative scoring 10 would otherwise lose every pair


def test_one_and_two_ranks_give_identical_metrics_on_one_checkpoint(tmp_path):
    from tml.common.checkpointing import load_model_weights

    torch.manual_seed(7)
    checkpoint = str(tmp_path / "ckpt")
    save_state(checkpoint, {"model": TwhinModelAndLoss(TwhinModel(CONFIG, device="cpu"))}, no_dist=True)
    two = run_on_ranks(ranks_from_checkpoint, 2, CONFIG.model_dump_json(), checkpoint, EVAL, KNOWN)
    torch.manual_seed(8)  # another init: only the checkpoint counts
    one_process = TwhinModelAndLoss(TwhinModel(CONFIG, device="cpu"))
    load_model_weights(one_process, checkpoint)
    one = link_prediction_ranks(one_process, EVAL, SCHEMA, KNOWN, query_chunk_size=3, entity_chunk_size=7)
    assert one.metrics() == two[0][0] == two[1][0]
    for _, tail, head in two:
        np.testing.assert_array_equal(tail, one.tail)
        np.testing.assert_array_equal(head, one.head)


def test_evaluator_reads_validation_window_and_filters_with_all_known_edges(tmp_path):
    from tml.projects.twhin.config import TwhinConfig
    from tml.projects.twhin.data.generate_random_graph import write_random_graph
    from tml.projects.twhin.data.reader import read_edges
    from tml.projects.twhin.metrics import LinkPredictionEvaluator

    write_random_graph(str(tmp_path / "all"), CONFIG.table_sizes, [("fav", "user", "tweet"), ("follow", "user", "user")], 300)
    write_random_graph(str(tmp_path / "test"), CONFIG.table_sizes, [("fav", "user", "tweet"), ("follow", "user", "user")], 40, seed=9)
    data = {"data_root": str(tmp_path / "all/*.parquet"), "per_replica_batch_size": 10}
    config = TwhinConfig.model_validate({
        "model": CONFIG.model_dump(),
        "train_data": {**data, "limit": 250},
        "validation_data": {**data, "offset": 250},
        "link_prediction": {"max_edges": 20, "known_edges": [str(tmp_path / "test/*.parquet")], "hits_at": [3]},
    })
    evaluator = LinkPredictionEvaluator(config)
    edges, known = evaluator.edges()
    everything = read_edges(str(tmp_path / "all/*.parquet"), SCHEMA)
    assert edges.lhs.tolist() == everything.lhs[250:270].tolist()
    assert len(known) == 300 + 40
    model = plain_model()
    expected = link_prediction_ranks(model, edges, SCHEMA, known).metrics(hits_at=(3,))
    assert evaluator.evaluate(model) == expected and "hits@3" in expected
