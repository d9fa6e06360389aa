import importlib.util
import uuid
from pathlib import Path

import fsspec
import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from tml.common import filesystem


@pytest.fixture
def memory_dir():
    """A fresh folder in fsspec's process-wide memory file system, removed afterwards."""
    memory = fsspec.filesystem("memory")
    folder = f"/test-filesystem-{uuid.uuid4().hex}"
    memory.mkdir(folder)
    yield folder
    memory.rm(folder, recursive=True)


def write_memory(path: str, data: bytes) -> None:
    with fsspec.filesystem("memory").open(path, "wb") as handle:
        handle.write(data)


def test_plain_and_file_paths_are_local(tmp_path):
    assert filesystem.is_local_fs(filesystem.infer_fs(str(tmp_path)))
    assert filesystem.is_local_fs(filesystem.infer_fs(f"file://{tmp_path}"))
    assert isinstance(filesystem.infer_fs("memory://x"), MemoryFileSystem)
    assert not filesystem.is_local_fs(filesystem.infer_fs("memory://x"))
    assert isinstance(filesystem.infer_fs("relative/path.txt"), LocalFileSystem)


def test_local_glob_is_sorted_and_files_open(tmp_path):
    for name in ("b.txt", "a.txt", "c.csv"):
        (tmp_path / name).write_text(name)
    matches = filesystem.glob(str(tmp_path / "*.txt"))
    assert matches == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    with filesystem.open_file(matches[1], "r") as handle:
        assert handle.read() == "b.txt"
    assert filesystem.exists(matches[0]) and not filesystem.exists(str(tmp_path / "zzz.txt"))
    assert filesystem.glob(str(tmp_path / "*.parquet")) == []


def test_file_protocol_glob(tmp_path):
    (tmp_path / "one.txt").write_text("1")
    assert filesystem.glob(f"file://{tmp_path}/*.txt") == [str(tmp_path / "one.txt")]


def test_memory_glob_keeps_the_protocol_so_results_reopen(memory_dir):
    write_memory(f"{memory_dir}/part-1.bin", b"\x01")
    write_memory(f"{memory_dir}/part-0.bin", b"\x00")
    write_memory(f"{memory_dir}/nested/part-2.bin", b"\x02")
    matches = filesystem.glob(f"memory://{memory_dir}/*.bin")
    assert matches == [f"memory://{memory_dir}/part-0.bin", f"memory://{memory_dir}/part-1.bin"]
    assert filesystem.glob(f"memory://{memory_dir}/**/*.bin") == [
        f"memory://{memory_dir}/nested/part-2.bin",
        f"memory://{memory_dir}/part-0.bin",
        f"memory://{memory_dir}/part-1.bin",
    ]
    with filesystem.open_file(matches[1]) as handle:
        assert handle.read() == b"\x01"
    assert filesystem.exists(matches[0])
    assert filesystem.strip_protocol(matches[0]) == f"{memory_dir}/part-0.bin"


def test_writing_then_reading_through_open_file(memory_dir):
    path = f"memory://{memory_dir}/new.txt"
    with filesystem.open_file(path, "w") as handle:
        handle.write("written")
    with filesystem.open_file(path, "r") as handle:
        assert handle.read() == "written"


def test_missing_file_names_the_path(tmp_path, memory_dir):
    missing = str(tmp_path / "absent.parquet")
    with pytest.raises(FileNotFoundError, match=f"^no such file: {missing}$"):
        filesystem.open_file(missing)
    with pytest.raises(FileNotFoundError, match=f"^no such file: memory://{memory_dir}/absent$"):
        filesystem.open_file(f"memory://{memory_dir}/absent")


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed here")
def test_missing_protocol_package_is_named():
    with pytest.raises(ImportError, match=r"cannot open 'gs://' paths: .*install 'gcsfs' .*pip install 'tml\[gcs\]'"):
        filesystem.glob("gs://some-bucket/data/*.parquet")


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed here")
def test_missing_s3_package_is_named():
    with pytest.raises(ImportError, match=r"cannot open 's3://' paths: .*install 's3fs' .*pip install 'tml\[s3\]'"):
        filesystem.open_file("s3://bucket/key")


def test_the_extras_named_in_errors_install_those_packages():
    import tomllib

    with open(Path(__file__).resolve().parents[2] / "pyproject.toml", "rb") as stream:
        extras = tomllib.load(stream)["project"]["optional-dependencies"]
    assert [requirement.split(">")[0] for requirement in extras["gcs"]] == ["gcsfs"]
    assert [requirement.split(">")[0] for requirement in extras["s3"]] == ["s3fs"]
    assert [requirement.split(">")[0] for requirement in extras["wandb"]] == ["wandb"]


def test_unknown_protocol_suggests_checking_the_spelling():
    with pytest.raises(ImportError, match=r"cannot open 'gz://' paths: .*check the path's protocol spelling"):
        filesystem.infer_fs("gz://bucket/file")


class _UrlOptionsFileSystem(MemoryFileSystem):
    """A memory file system that, like HDFS, takes its host and port from the URL."""

    protocol = "tmlhosts"
    cachable = False

    def __init__(self, host: str = "", port: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.host, self.port = host, port

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict:
        netloc = path.split("://", 1)[1].split("/", 1)[0]
        host, _, port = netloc.partition(":")
        return {"host": host, "port": int(port or 0)}


def test_options_in_the_url_reach_the_file_system():
    fsspec.register_implementation("tmlhosts", _UrlOptionsFileSystem, clobber=True)
    first = filesystem.infer_fs("tmlhosts://namenode-a:9000/data/part-0.parquet")
    second = filesystem.infer_fs("tmlhosts://namenode-b:8020/data/part-0.parquet")
    assert (first.host, first.port) == ("namenode-a", 9000)
    assert (second.host, second.port) == ("namenode-b", 8020)  # not the first one's, cached by protocol
