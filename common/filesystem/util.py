"""fsspec file systems chosen by path, with a clear message when a protocol's package is missing."""
from __future__ import annotations

import functools
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

# Packages that implement the protocols users are most likely to meet, and tml's extra that installs
# the package (`pip install 'tml[gcs]'`).
_PROTOCOL_EXTRAS = {"gcsfs": "gcs", "s3fs": "s3"}
_PROTOCOL_PACKAGES = {
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "s3": "s3fs",
    "s3a": "s3fs",
    "az": "adlfs",
    "abfs": "adlfs",
    "hdfs": "pyarrow (with libhdfs available)",
}


def _protocol(path: str) -> str:
    return path.split("://", 1)[0] if "://" in path else "file"


def _cannot_open(protocol: str, error: Exception) -> ImportError:
    # OSError: pyarrow's HDFS client fails at construction without libjvm, listing every path it
    # tried; the first line says what is wrong.
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    package = _PROTOCOL_PACKAGES.get(protocol)
    if package is None:
        hint = "check the path's protocol spelling"
    elif package in _PROTOCOL_EXTRAS:
        hint = (f"install '{package}' into the environment (.venv/bin/pip install '{package}', or "
                f"pip install 'tml[{_PROTOCOL_EXTRAS[package]}]')")
    else:
        hint = f"install '{package}' into the environment (.venv/bin/pip install {package.split()[0]})"
    return ImportError(f"cannot open '{protocol}://' paths: {reason}. To use them, {hint}.")


@functools.lru_cache(maxsize=None)
def _local_filesystem() -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("file")


def infer_fs(path: str) -> fsspec.AbstractFileSystem:
    """The file system that serves `path` (a plain path or `file://` is local). Options a URL carries
    (an HDFS namenode's host and port, a user) configure it; fsspec caches one instance per set of
    options."""
    protocol = _protocol(path)
    if protocol == "file":
        return _local_filesystem()
    try:
        filesystem, _ = fsspec.core.url_to_fs(path)
    except (ImportError, ValueError, OSError) as error:
        raise _cannot_open(protocol, error) from error
    return filesystem


def is_local_fs(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def strip_protocol(path: str) -> str:
    return infer_fs(path)._strip_protocol(path)


def glob(pattern: str) -> list[str]:
    """Sorted matches of `pattern`, keeping the protocol so results can be opened again."""
    fs = infer_fs(pattern)
    matches = fs.glob(pattern)
    return sorted(matches if is_local_fs(fs) else [fs.unstrip_protocol(match) for match in matches])


def exists(path: str) -> bool:
    return infer_fs(path).exists(path)


def open_file(path: str, mode: str = "rb", **kwargs: Any) -> IO:
    """Open `path` on its file system; a missing file raises FileNotFoundError naming it."""
    fs = infer_fs(path)
    if "r" in mode and not fs.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    return fs.open(path, mode, **kwargs)
