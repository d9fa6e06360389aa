"""A plain training loop over torchrec's TrainPipelineSparseDist under world-size-1 DMP: the model
learns a planted-structure random graph (loss falls, held-out filtered MRR far above chance)."""
import numpy as np
import pytest
import torch
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from tml.projects.twhin.data.edges import EdgesDataset
from tml.projects.twhin.data.generate_random_graph import write_random_graph
from tml.projects.twhin.data.reader import read_edges
from tml.projects.twhin.data.schema import GraphSchema
from tml.projects.twhin.metrics import create_metrics, link_prediction_metrics
from twhin_helpers import model_config, sharded_model

TABLES = {"user": 60, "tweet": 40}
RELATIONS = [("fav", "user", "tweet"), ("follow", "user", "user")]


def chance_mrr(candidates: int) -> float:
    return sum(1.0 / rank for rank in range(1, candidates + 1)) / candidates


def test_training_lowers_the_loss_and_learns_held_out_edges(process_group, tmp_path):
    write_random_graph(str(tmp_path), TABLES, RELATIONS, 4000, num_files=2, num_clusters=4, noise=0.0, seed=0)
    config = model_config(operators=("translation", "complex_diagonal"), tables=TABLES, relations=RELATIONS,
                          dim=16, lr=0.1, algorithm="adagrad", translation={"adam": {"lr": 0.01}})
    schema = GraphSchema.from_model_config(config)
    files = str(tmp_path / "*.parquet")
    train = EdgesDataset(files, schema, 100, in_batch_negatives=8, global_negatives=4, limit=3600)
    held_out = read_edges(files, schema, offset=3600)
    known = read_edges(files, schema)
    model, optimizer, scheduler = sharded_model(config)
    before = link_prediction_metrics(model, held_out, schema, known)

    pipeline = TrainPipelineSparseDist(model, optimizer, torch.device("cpu"))
    batches = train.dataloader(num_epochs=None)
    metrics = create_metrics()
    losses = []
    for step in range(300):
        outputs = pipeline.progress(batches)
        scheduler.step()
        losses.append(outputs["loss"].item())
    pipeline.detach()
    model.eval()  # scored pairs (what the AUC reads) are output in eval mode
    with torch.no_grad():
        for _ in range(20):
            metrics.update(model(next(batches))[1])
    after = link_prediction_metrics(model, held_out, schema, known)

    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20])
    assert metrics.compute()["AUC"].item() > 0.8  # chance: 0.5
    chance = (chance_mrr(40) + chance_mrr(60)) / 2
    assert before["mrr"] < 1.5 * chance
    assert after["mrr"] > 2.5 * chance and after["mrr"] > 2 * before["mrr"]
    assert after["hits@10"] > before["hits@10"]


@pytest.mark.parametrize("operators", [("translation", "diagonal"), ("translation", "translation")])
def test_two_ranks_train_in_step(tmp_path, operators):
    from tml.common.testing_utils import run_on_ranks
    from rank_fns_twhin import train_on_ranks

    write_random_graph(str(tmp_path), TABLES, RELATIONS, 1001, num_files=3, num_clusters=4, noise=0.0, seed=1)
    config = model_config(operators=operators, tables=TABLES, relations=RELATIONS, dim=16,
                          lr=0.3, algorithm="adagrad", translation={"adam": {"lr": 0.03}})
    config = config.model_copy(update={"loss": config.loss.model_validate({"kind": "softmax"})})
    results = run_on_ranks(train_on_ranks, 2, config.model_dump_json(), str(tmp_path / "*.parquet"), 60)
    # 500 and 501 edges of two table pairs, batches of 50: at most 11 + 1 per rank, the same on both
    assert [r["batches_per_epoch"] for r in results] == [12, 12]
    for result in results:
        assert result["last"] < 0.8 * result["first"]
    # the relation vectors are data-parallel: both ranks hold the same trained values
    torch.testing.assert_close(results[0]["relations"], results[1]["relations"], rtol=0, atol=0)


def test_a_rank_holding_no_table_trains_beside_the_one_that_does(tmp_path):
    """One table placed whole on rank 0: rank 1 has no fused optimizer and still trains its share."""
    from tml.common.testing_utils import run_on_ranks
    from rank_fns_twhin import train_on_ranks

    tables, relations = {"user": 60}, [("follow", "user", "user")]
    write_random_graph(str(tmp_path), tables, relations, 400, num_files=2, num_clusters=4, noise=0.0, seed=2)
    config = model_config(tables=tables, relations=relations, dim=8, lr=0.3, algorithm="adagrad")
    results = run_on_ranks(train_on_ranks, 2, config.model_dump_json(), str(tmp_path / "*.parquet"), 20, "table_wise")
    assert sorted("fused_opt" in result["optimizer_keys"] for result in results) == [False, True]
    for result in results:
        assert result["last"] < result["first"]
    torch.testing.assert_close(results[0]["relations"], results[1]["relations"], rtol=0, atol=0)
    # and it resumes from a checkpoint exactly (its optimizer has no state to save or load)
    from rank_fns_twhin import resume_on_a_rank_holding_no_table

    differences = run_on_ranks(resume_on_a_rank_holding_no_table, 2, config.model_dump_json(),
                               str(tmp_path / "*.parquet"), str(tmp_path / "checkpoints"))
    assert differences == [(0.0, 0.0), (0.0, 0.0)]


@pytest.mark.parametrize("side_aligned", [True, False])
def test_two_ranks_score_each_lookup_with_its_own_row_whatever_the_output_order(side_aligned):
    """Four tables, each whole on one rank: the sharded lookup returns them in the plan's order
    (a, c, b, d), not the config's. The model must still take every node's own row."""
    import json

    from tml.common.testing_utils import run_on_ranks
    from rank_fns_twhin import logits_against_tables

    tables = {"a": 6, "b": 7, "c": 8, "d": 9}
    relations = [("ac", "a", "c"), ("ac2", "a", "c")] if side_aligned else [("ab", "a", "b"), ("cd", "c", "d")]
    operators = ("translation", "translation") if side_aligned else ("translation", "diagonal")  # both scorers
    config = model_config(operators=operators, tables=tables, relations=relations, dim=4)
    sides = [(tables[lhs], tables[rhs]) for _, lhs, rhs in relations]
    edges = [
        {"lhs": [i % sides[r][0] for i, r in enumerate(rels)], "rel": rels,
         "rhs": [(3 * i + 1) % sides[r][1] for i, r in enumerate(rels)]}
        for rels in ([0, 1, 0, 1, 1], [1, 0, 0, 1, 0])
    ]
    results = run_on_ranks(logits_against_tables, 2, config.model_dump_json(), json.dumps(edges))
    assert results[0]["keys"] != list(tables)  # the case this test is about
    for result in results:
        np.testing.assert_allclose(result["positives"], result["expected"], rtol=1e-5, atol=1e-6)
