"""The shuffle pool: uniform batches without replacement, a kept buffer, drop-remainder at the end."""
from __future__ import annotations

import numpy as np

from tml.projects.home.recap.data.arrow_columns import JaggedColumn
from tml.projects.home.recap.data.parquet_reader import Chunk
from tml.projects.home.recap.data.shuffle import ShufflePool, gather


def _chunk(start: int, rows: int) -> Chunk:
    ids = np.arange(start, start + rows)
    lengths = ids % 2
    jagged = JaggedColumn(np.repeat(ids, lengths), np.concatenate([[0], np.cumsum(lengths)]))
    return Chunk(f"chunk{start}", rows, {"id": ids, "pair": np.stack([ids, -ids], 1), "odd": jagged})


def _run(pool: ShufflePool, chunks: list[Chunk]) -> list[dict]:
    batches = []
    for chunk in chunks:
        batches += [gather(plan) for plan in pool.add(chunk)]
    return batches + [gather(plan) for plan in pool.drain()]


def test_no_shuffle_keeps_order_and_drops_the_remainder():
    batches = _run(ShufflePool(4, 0, np.random.default_rng(0)), [_chunk(0, 6), _chunk(6, 5)])
    assert [b["id"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert batches[1]["pair"].tolist() == [[4, -4], [5, -5], [6, -6], [7, -7]]
    assert batches[1]["odd"].values.tolist() == [5, 7] and batches[1]["odd"].lengths.tolist() == [0, 1, 0, 1]


def test_shuffle_keeps_the_buffer_and_emits_every_row_once():
    pool = ShufflePool(4, 10, np.random.default_rng(0))
    assert list(pool.add(_chunk(0, 12))) == [] and pool.pending_rows == 12  # 12 - 4 would leave < 10
    assert len(list(pool.add(_chunk(12, 12)))) == 3 and pool.pending_rows == 12  # (24 - 10) // 4 batches
    batches = _run(ShufflePool(4, 10, np.random.default_rng(0)), [_chunk(0, 12), _chunk(12, 12), _chunk(24, 8)])
    ids = np.concatenate([b["id"] for b in batches])
    assert len(ids) == 32 and sorted(ids.tolist()) == list(range(32))
    for b in batches:  # columns stay aligned row by row
        assert (b["pair"][:, 0] == b["id"]).all() and (b["pair"][:, 1] == -b["id"]).all()
        assert b["odd"].values.tolist() == [i for i in b["id"].tolist() if i % 2]
    assert ids.tolist() != sorted(ids.tolist())


def test_gathered_arrays_are_writable_copies():
    chunk = _chunk(0, 4)
    chunk.columns["id"].setflags(write=False)
    (plan,) = ShufflePool(4, 0, np.random.default_rng(0)).add(chunk)
    batch = gather(plan)
    batch["id"][0] = 99
    assert chunk.columns["id"][0] == 0
