"""Remote readers on 127.0.0.1: two reader processes serve local.yaml's ready batches over Arrow
Flight, a trainer reads them round-robin, goes on when one reader dies, trains through the config,
and stops with a clear error when no reader is left."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tml.core.config import load_config_from_yaml

from reader_process import reader_port

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[4]
LOCAL_YAML = REPO_ROOT / "projects" / "home" / "recap" / "config" / "local.yaml"
DATA = "tmp/tml/recap_local/data"
READER_FILES = {"a": "part-0000[0-3].parquet", "b": "part-0000[4-7].parquet"}


def _reader_overrides(home: Path, files: str) -> list[str]:
    return [f"train_data.inputs={home}/{DATA}/{files}", "train_data.global_batch_size=16"]


def _start_reader(home: Path, files: str) -> subprocess.Popen:
    sets = [item for override in _reader_overrides(home, files) for item in ("--set", override)]
    command = [sys.executable, "-m", "tml.projects.home.recap.data.flight_reader", "--config_path", str(LOCAL_YAML),
               *sets, "--host", "127.0.0.1", "--port", "0"]
    env = {**os.environ, "HOME": str(home), "TML_BASE": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _local_batches(home: Path, files: str, count: int) -> list:
    """What a reader of these files serves, made here by RecapDataset."""
    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.home.recap.data.dataset import RecapDataset

    config = load_config_from_yaml(RecapConfig, LOCAL_YAML, _reader_overrides(home, files))
    batches = iter(RecapDataset(config.train_data, repeat=True, rank=0, world_size=1))
    return [next(batches) for _ in range(count)]


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.home.recap.data.generate_random_data import generate_random_data

    home = tmp_path_factory.mktemp("home")
    os.environ.setdefault("TML_BASE", str(REPO_ROOT))
    previous = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        config = load_config_from_yaml(RecapConfig, LOCAL_YAML)
    finally:
        os.environ["HOME"] = previous or ""
    generate_random_data(config.train_data, str(home / DATA), n_examples=640, num_files=10, rows_per_row_group=32)
    return home


def test_two_readers_round_robin_a_dead_one_and_training_through_the_config(home, monkeypatch, caplog, capsys):
    from tml.projects.home.recap.config import RecapConfig
    from tml.projects.home.recap.data.remote import RemoteRecapDataset
    from tml.projects.home.recap.main import main

    readers = {name: _start_reader(home, files) for name, files in READER_FILES.items()}
    try:
        ports = {name: reader_port(process) for name, process in readers.items()}
        addresses = [f"127.0.0.1:{ports['a']}", f"127.0.0.1:{ports['b']}"]
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("TML_BASE", str(REPO_ROOT))
        config = load_config_from_yaml(RecapConfig, LOCAL_YAML, ["train_data.global_batch_size=16"])
        dataset = RemoteRecapDataset(config.train_data, addresses, world_size=1)
        assert dataset.torch_element_spec["continuous_features"] == torch.Size([-1, 256])  # truncated by the reader
        stream = iter(dataset)
        # Each reader's stream, made here too: batch contents -> (reader, position in its stream).
        known = {
            batch.continuous_features.numpy().tobytes(): (name, index)
            for name, files in READER_FILES.items()
            for index, batch in enumerate(_local_batches(home, files, 400))
        }

        def source(batch) -> tuple[str, int]:
            return known[batch.continuous_features.numpy().tobytes()]

        assert [source(next(stream)) for _ in range(4)] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
        readers["b"].send_signal(signal.SIGKILL)
        readers["b"].wait(timeout=30)
        # Batches b had sent before it died (in the connection's buffers) still arrive, in turn with
        # a's; then a alone goes on from where it was.
        after = [source(next(stream)) for _ in range(300)]
        from_b = [index for name, index in after if name == "b"]
        from_a = [index for name, index in after if name == "a"]
        assert from_b == list(range(2, 2 + len(from_b))) and from_a == list(range(2, 2 + len(from_a)))
        assert after[-20:] == [("a", index) for index in range(from_a[-1] - 19, from_a[-1] + 1)]
        assert f"reader 127.0.0.1:{ports['b']} failed" in caplog.text + capsys.readouterr().out

        save_dir = home / "run"
        sets = ["training.num_train_steps=3", "training.checkpoint_every_n=3", "training.train_log_every_n=1",
                "train_data.global_batch_size=16", "validation_data={}", f"training.save_dir={save_dir}",
                f"train_data.remote_readers=[{addresses[0]}]"]
        assert main(["--config_path", str(LOCAL_YAML)] + [i for s in sets for i in ("--set", s)]) == 0
        assert (save_dir / "3").is_dir()
    finally:
        for process in readers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)

    with pytest.raises(RuntimeError, match=r"every reader failed: 127.0.0.1:\d+ \(.*\); 127.0.0.1:\d+ \("):
        next(iter(RemoteRecapDataset(config.train_data, addresses, world_size=1)))
