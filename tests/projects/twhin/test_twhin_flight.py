"""TwHIN remote readers on 127.0.0.1: a reader process serves config/local.yaml's edge batches over
Arrow Flight; a trainer gets exactly the batches a local EdgesDataset makes (two table pairs, so
two batch layouts), trains through the config, refuses batches of another shape, and stops with a
clear error when the reader is gone. Round-robin over several readers and a reader dying mid-stream
are the shared tml.common.flight code, tested with the Heavy Ranker's readers."""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys

import pytest
import torch

from tml.common.entry_point import load_command_config
from tml.projects.twhin.config import TwhinConfig
from tml.projects.twhin.data.data import create_dataset
from tml.projects.twhin.data.generate_random_graph import write_random_graph
from tml.projects.twhin.data.remote import RemoteEdgesDataset
from tml.projects.twhin.run import build_parser, main
from reader_process import reader_port
from twhin_helpers import CONFIG_DIR, REPO_ROOT

pytestmark = pytest.mark.slow

LOCAL = str(CONFIG_DIR / "local.yaml")
TABLES = {"user": 1000, "tweet": 500}  # as in local.yaml
# local.yaml's four relations, the last one turned into user -> user: batches of two table pairs.
RELATIONS = [("fav", "user", "tweet"), ("reply", "user", "tweet"), ("retweet", "user", "tweet"),
             ("magic_recs", "user", "user")]


def _settings(graph: str) -> list[str]:
    settings = [f"train_data.data_root={graph}/*.parquet", f"validation_data.data_root={graph}/*.parquet",
                "train_data.limit=1800", "validation_data.limit=200", "validation_data.offset=1800",
                "model.relations.3.rhs=user", "training.num_train_steps=3", "training.checkpoint_every_n=3",
                "training.train_log_every_n=1"]
    return [item for setting in settings for item in ("--set", setting)]


def _start_reader(graph: str) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "tml.projects.twhin.data.flight_reader", "--config_path", LOCAL,
               *_settings(graph), "--host", "127.0.0.1", "--port", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    reader = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        return reader, reader_port(reader)
    except AssertionError:
        reader.kill()
        raise


def _same_batch(got, expected) -> bool:
    return (got.layout == expected.layout and got.nodes.keys() == expected.nodes.keys()
            and got.nodes.stride() == expected.nodes.stride()
            and torch.equal(got.nodes.lengths(), expected.nodes.lengths().int())
            and torch.equal(got.nodes.values(), expected.nodes.values())
            and all(torch.equal(getattr(got, name), getattr(expected, name)) for name in ("labels", "rels", "weights")))


def test_reader_serves_the_local_stream_and_a_trainer_trains_from_it(tmp_path, capsys):
    graph = str(tmp_path / "graph")
    write_random_graph(graph, TABLES, RELATIONS, 2000, num_files=2, seed=3)
    config = load_command_config(TwhinConfig, build_parser().parse_args(["--config_path", LOCAL, *_settings(graph)]))
    reader, port = _start_reader(graph)
    address = f"127.0.0.1:{port}"
    try:
        # What the reader serves: one training rank's stream of these edges, made here too.
        local = create_dataset(config.train_data, config.model, rank=0, world_size=1)
        expected = list(itertools.islice(local.dataloader(num_epochs=None), 2 * len(local)))  # two epochs
        assert len({batch.layout for batch in expected}) == 2
        remote = iter(RemoteEdgesDataset(config.train_data, config.model, [address]))
        for index, batch in enumerate(expected):
            assert _same_batch(next(remote), batch), index

        # A trainer whose config makes other batches stops at the first one, saying why.
        other = config.train_data.model_copy(update={"per_replica_batch_size": 100})
        with pytest.raises(ValueError, match="another shape than this trainer's config makes"):
            next(iter(RemoteEdgesDataset(other, config.model, [address])))

        save_dir = tmp_path / "run"
        arguments = ["--config_path", LOCAL, *_settings(graph), "--save_dir", str(save_dir), "--mode", "train",
                     "--set", f"train_data.remote_readers=[{address}]"]
        capsys.readouterr()
        assert main(arguments) == 0
        assert (save_dir / "3" / ".complete").exists()
        assert f"from remote readers ['{address}']" in capsys.readouterr().out
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait(timeout=30)
    with pytest.raises(RuntimeError, match=rf"every reader failed: {address} \("):
        next(iter(RemoteEdgesDataset(config.train_data, config.model, [address])))


def test_validation_edges_are_not_read_remotely():
    from tml.core.config import ConfigError

    args = build_parser().parse_args(["--config_path", LOCAL, "--set", "validation_data.remote_readers=[127.0.0.1:1]"])
    with pytest.raises(ConfigError, match="only train_data reads from remote readers"):
        load_command_config(TwhinConfig, args)
