"""A large table of the Heavy Ranker initialised from pretrained vectors (as TwHIN exports them)
through the config: the rows come from the file, training goes on from them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from tml.common.checkpointing import read_metadata, restore
from tml.core.config import load_config_from_yaml

REPO_ROOT = Path(__file__).resolve().parents[4]
LOCAL_YAML = REPO_ROOT / "projects" / "home" / "recap" / "config" / "local.yaml"
ROWS, DIM = 1_000_000, 4  # the random data draws ids below 1,000,000 (checked against the table)


def _tables(uri: str) -> str:
    table = (f"{{name: meta__tweet_id, num_embeddings: {ROWS}, embedding_dim: {DIM}, "
             f"pretrained: {{emb_name: tweet, embedding_snapshot_uri: '{uri}'}}}}")
    return (f"model.large_embeddings={{tables: [{table}], optimizer: {{init_learning_rate: 0.1}}, "
            "tables_to_log: [meta__tweet_id]}")


@pytest.fixture
def recap_home(tmp_path, monkeypatch) -> Path:
    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.home.recap.data.generate_random_data import generate_random_data

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TML_BASE", str(REPO_ROOT))
    config = load_config_from_yaml(RecapConfig, LOCAL_YAML)
    generate_random_data(config.train_data, str(tmp_path / "tmp" / "tml" / "recap_local" / "data"),
                         n_examples=640, num_files=10, rows_per_row_group=32)
    return tmp_path


def _args(save_dir: Path, *overrides: str) -> list[str]:
    sets = ["training.num_train_steps=2", "training.checkpoint_every_n=2", "training.eval_log_every_n=2",
            "training.num_eval_steps=1", "train_data.global_batch_size=16", "validation_data={}",
            f"training.save_dir={save_dir}", *overrides]
    return ["--config_path", str(LOCAL_YAML)] + [item for override in sets for item in ("--set", override)]


def test_large_table_starts_from_exported_vectors(recap_home, capsys):
    from tml.projects.home.recap.main import main

    ids = np.arange(100, 150, dtype=np.int64)
    vectors = np.random.default_rng(0).standard_normal((len(ids), DIM)).astype(np.float32)
    export = recap_home / "twhin_export"
    export.mkdir()
    pq.write_table(pa.table({"id": ids, "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM)}),
                   export / "tweet.parquet")
    save_dir = recap_home / "run"
    assert main(_args(save_dir, _tables(str(export)))) == 0
    assert f"table 'meta__tweet_id': 50 of {ROWS} rows from vectors {export}/tweet.parquet; {ROWS - 50} rows" in capsys.readouterr().out
    (key,) = [k for k in read_metadata(str(save_dir / "2")).state_dict_metadata if k.endswith("meta__tweet_id.weight")]
    state = {key: torch.empty(ROWS, DIM)}
    restore(str(save_dir / "2"), state, no_dist=True)
    # Two batches of 16 random tweet ids (of ~1e9 possible, hashed into the table) almost surely miss
    # rows 100-149, whose pretrained values SGD then leaves as they were.
    torch.testing.assert_close(state[key][100:150], torch.from_numpy(vectors), rtol=0, atol=0)
    # tables_to_log: the table's mean row norm at the last step, as the checkpoint of that step has it.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(save_dir / "tensorboard" / "train")).Reload()
    ((step, logged),) = [(e.step, e.value) for e in events.Scalars("meta__tweet_id-norm-0")]
    assert step == 2 and logged == pytest.approx(state[key].double().norm(dim=1).mean().item(), rel=1e-5)


def test_width_mismatch_stops_the_job_naming_both(recap_home, capsys):
    from tml.projects.home.recap.main import main

    wide = recap_home / "wide.parquet"
    pq.write_table(pa.table({"id": [0], "vector": pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(8, np.float32)), 8)}), wide)
    assert main(_args(recap_home / "run", _tables(str(wide)))) == 2  # a config error: one line, no traceback
    error = capsys.readouterr().err
    assert f"table 'meta__tweet_id' has embedding_dim {DIM} but its pretrained source vectors {wide} has vectors of width 8" in error
