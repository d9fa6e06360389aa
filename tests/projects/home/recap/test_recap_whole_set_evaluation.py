"""Whole-set evaluation (num_eval_steps < 0) counts every row: a last partial batch is filled up
with label-0, weight-0 rows on every rank, and the metrics equal a hand computation over all rows."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from rank_fns_recap_eval import evaluate_whole_set, fixed_model
from recap_data_fixtures import TASKS, make_config, write_files, write_schema

from tml.common.testing_utils import run_on_ranks
from tml.projects.home.recap.data.dataset import RecapDataset

ROWS_PER_FILE = [11, 6]  # 17 rows: no batch size below divides them


@pytest.fixture
def data(tmp_path) -> tuple[str, str]:
    schema = write_schema(str(tmp_path))
    write_files(str(tmp_path / "data"), schema, ROWS_PER_FILE)
    return schema, f"{tmp_path}/data/*.parquet"


def _ids(batch) -> list[int]:
    return batch.discrete_features[:, 0].tolist()


def test_evaluation_pads_the_last_batch_and_training_drops_it(data):
    schema, inputs = data
    config = make_config(schema, inputs, global_batch_size=4)
    batches = list(RecapDataset(config, mode="evaluate"))
    assert [len(_ids(b)) for b in batches] == [4, 4, 4, 4, 4]
    last = batches[-1]
    assert _ids(last)[0] == 16 and last.weights[1:].eq(0).all() and last.labels[1:].eq(0).all()
    assert last.weights[0].eq(1).all()
    counted = [i for b in batches for i, w in zip(_ids(b), b.weights[:, 0].tolist()) if w > 0]
    assert sorted(counted) == list(range(17))
    assert sum(len(_ids(b)) for b in RecapDataset(config, mode="train")) == 16  # drop_remainder
    per_rank = [list(RecapDataset(config, mode="evaluate", rank=rank, world_size=2)) for rank in (0, 1)]
    assert all(len(_ids(b)) == 2 for share in per_rank for b in share)
    counted = [i for share in per_rank for b in share for i, w in zip(_ids(b), b.weights[:, 0].tolist()) if w > 0]
    assert sorted(counted) == list(range(17))  # each rank pads its own last batch (11 and 6 rows)


def test_padding_rows_keep_the_sampling_weights_of_real_rows_and_get_zero(data):
    schema, inputs = data
    config = make_config(schema, inputs, global_batch_size=8,
                         tasks={TASKS[0]: {"neg_downsampling_rate": 0.5}, TASKS[1]: {}})
    last = list(RecapDataset(config, mode="evaluate"))[-1]
    real = last.labels[:1, 0].float()
    torch.testing.assert_close(last.weights[:1, 0], real + (1 - real) / 0.5)
    assert last.weights[1:].eq(0).all()


def _hand_metrics(schema: str, inputs: str) -> dict[str, float]:
    """All 17 rows as one batch through the same model, metrics computed here with numpy."""
    config = make_config(schema, inputs, global_batch_size=17)
    (batch,) = list(RecapDataset(config, mode="evaluate"))
    model = fixed_model(config, RecapDataset(config, mode="evaluate").torch_element_spec)
    with torch.no_grad():
        loss, outputs = model(batch)
    expected = {"loss": float(loss)}
    for column, task in enumerate(TASKS):
        p = outputs["calibrated_probabilities"][:, column].double().numpy()
        y = outputs["labels"][:, column].numpy()
        positives, negatives = p[y == 1], p[y == 0]
        wins = (positives[:, None] > negatives[None, :]).sum() + 0.5 * (positives[:, None] == negatives[None, :]).sum()
        expected[f"auroc/{task}"] = wins / (len(positives) * len(negatives))
        expected[f"ctr/{task}"] = y.mean()
        expected[f"pctr/{task}"] = p.mean()
        expected[f"count/{task}"] = y.sum()
        expected[f"calibration/{task}"] = p.mean() / y.mean()
        cross_entropy = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
        base = y.mean()
        expected[f"rce/{task}"] = 100 * (1 - cross_entropy / -(base * np.log(base) + (1 - base) * np.log(1 - base)))
    return expected


@pytest.mark.parametrize("world_size", [1, 2])
def test_whole_set_metrics_equal_a_hand_computation_over_all_rows(data, world_size):
    schema, inputs = data
    # 4 rows per rank: 1 rank reads 4+4+4+4+(1 + 3 padding); 2 ranks read one file each,
    # 4+4+(3 + 1 padding) and 4+(2 + 2 padding), the second rank idling through the first's last batch.
    config = make_config(schema, inputs, global_batch_size=4 * world_size)
    results = run_on_ranks(evaluate_whole_set, world_size, config, timeout_s=120)
    expected = _hand_metrics(schema, inputs)
    for rank_results in results:
        for name, value in expected.items():
            assert rank_results[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
