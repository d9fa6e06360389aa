"""Pretrained embedding tables: rows from a tml checkpoint of another world size and sharding, or
from exported Parquet vectors (missing rows keep their init); mismatches are clear errors."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tml.common.checkpointing import load_model_weights
from tml.common.modules.embedding.pretrained import PretrainedError, load_pretrained_tables
from tml.common.testing_utils import run_on_ranks

from rank_fns_pretrained import load_into, train_and_save
from tiny_recsys import DIM, NUM_ROWS, TinyRecsys

PARQUET_IDS = np.array([0, 3, 4, 9, 15], dtype=np.int64)


def _vectors_table(ids: np.ndarray, width: int = DIM) -> pa.Table:
    values = (np.arange(len(ids) * width, dtype=np.float32) / 10).reshape(len(ids), width)
    return pa.table({"id": ids, "vector": pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)})


def _table(name: str, emb_name: str, uri: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, num_embeddings=NUM_ROWS, embedding_dim=DIM,
                           pretrained=SimpleNamespace(emb_name=emb_name, embedding_snapshot_uri=uri))


def _weight(model: TinyRecsys, table: str) -> torch.Tensor:
    return model.embeddings.ebc.embedding_bags[table].weight.detach().clone()


def _assemble(result: list[dict], table: str, when: str) -> torch.Tensor:
    """The whole table from every rank's pieces."""
    full = torch.full((NUM_ROWS, DIM), float("nan"))
    for rank_result in result:
        for (row, col), tensor in rank_result[when][table]:
            full[row:row + tensor.shape[0], col:col + tensor.shape[1]] = tensor
    return full


@pytest.mark.slow
def test_two_rank_checkpoint_and_parquet_vectors_into_a_row_wise_two_rank_model(tmp_path):
    """Saved by 2 ranks with tables placed whole (table_wise); loaded by 2 ranks that split every
    table by rows, and by a plain module in this process."""
    checkpoint = run_on_ranks(train_and_save, 2, str(tmp_path / "run"), timeout_s=120)[0]
    pq.write_table(_vectors_table(PARQUET_IDS), tmp_path / "user.parquet", row_group_size=2)
    sources = {"t0": ("t1", checkpoint), "t2": ("t1", str(tmp_path / "run")), "t3": ("user", str(tmp_path))}
    result = run_on_ranks(load_into, 2, "row_wise", sources, timeout_s=120)

    saved = TinyRecsys(device="cpu", seed=99)
    load_model_weights(saved, checkpoint)
    for table in ("t0", "t2"):  # a checkpoint, or a save_dir (its newest checkpoint)
        torch.testing.assert_close(_assemble(result, table, "after"), _weight(saved, "t1"), rtol=0, atol=0)
    before, after = _assemble(result, "t3", "before"), _assemble(result, "t3", "after")
    torch.testing.assert_close(after[PARQUET_IDS], torch.from_numpy(_vectors_table(PARQUET_IDS)["vector"]
                               .combine_chunks().flatten().to_numpy().reshape(-1, DIM)), rtol=0, atol=0)
    others = np.setdiff1d(np.arange(NUM_ROWS), PARQUET_IDS)
    torch.testing.assert_close(after[others], before[others], rtol=0, atol=0)
    assert result[0]["missing"] == {"t0": 0, "t2": 0, "t3": NUM_ROWS - len(PARQUET_IDS)}

    plain = TinyRecsys(device="cpu", seed=7)
    assert load_pretrained_tables(plain, [_table("t1", "t1", checkpoint)]) == {"t1": 0}
    torch.testing.assert_close(_weight(plain, "t1"), _weight(saved, "t1"), rtol=0, atol=0)
    with pytest.raises(PretrainedError, match=r"has no table 'user' .* its tables: \['t0', 't1', 't2', 't3'\]"):
        load_pretrained_tables(plain, [_table("t0", "user", checkpoint)])


def test_parquet_rows_into_a_plain_module(tmp_path):
    pq.write_table(_vectors_table(PARQUET_IDS), tmp_path / "vectors.parquet")
    model = TinyRecsys(device="cpu", seed=3)
    before = _weight(model, "t2")
    assert load_pretrained_tables(model, [_table("t2", "ignored", str(tmp_path / "vectors.parquet"))]) == {"t2": 11}
    after = _weight(model, "t2")
    assert torch.equal(after[PARQUET_IDS[1]], torch.arange(DIM, 2 * DIM, dtype=torch.float32) / 10)
    others = np.setdiff1d(np.arange(NUM_ROWS), PARQUET_IDS)
    assert torch.equal(after[others], before[others])


def test_width_mismatch_bad_ids_and_unknown_sources_name_both_sides(tmp_path):
    model = TinyRecsys(device="cpu")
    pq.write_table(_vectors_table(np.array([0, 1]), width=DIM + 2), tmp_path / "wide.parquet")
    with pytest.raises(PretrainedError, match=rf"table 't0' has embedding_dim {DIM} but its pretrained source "
                                              rf"vectors .*wide.parquet has vectors of width {DIM + 2}"):
        load_pretrained_tables(model, [_table("t0", "x", str(tmp_path / "wide.parquet"))])
    pq.write_table(_vectors_table(np.array([2, NUM_ROWS + 5])), tmp_path / "far.parquet")
    with pytest.raises(PretrainedError, match=rf"far.parquet has id {NUM_ROWS + 5} \(1 such ids\), outside "
                                              rf"table 't0' of {NUM_ROWS} rows"):
        load_pretrained_tables(model, [_table("t0", "x", str(tmp_path / "far.parquet"))])
    with pytest.raises(PretrainedError, match=r"nothing is neither a tml checkpoint, a save_dir holding one, a Parquet"):
        load_pretrained_tables(model, [_table("t0", "user", str(tmp_path / "nothing"))])
