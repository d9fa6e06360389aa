"""Finding and opening Parquet files on any fsspec file system: the one lister and the one opener
that the recap and TwHIN data pipelines and `tools/pq.py` share."""
from __future__ import annotations

import contextlib
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from tml.common import filesystem
from tml.core.errors import DataError

_GLOB_CHARACTERS = frozenset("*?[")


def is_bookkeeping_file(path: str) -> bool:
    """Files writers keep next to the data (_SUCCESS, _metadata, .crc): names starting with _ or ."""
    return path.rstrip("/").rsplit("/", 1)[-1].startswith(("_", "."))


def list_parquet_files(path: str) -> list[str]:
    """The data files `path` names, sorted: a glob's matches, every *.parquet below a directory, or
    the file itself. Bookkeeping files and directories are skipped; URLs keep their protocol.

    Raises FileNotFoundError saying why nothing was found.
    """
    fs = filesystem.infer_fs(path)
    if _GLOB_CHARACTERS & set(path):
        matches = filesystem.glob(path)
        if not matches:
            raise FileNotFoundError(f"no file matches the pattern '{path}'")
        files = [match for match in matches if not is_bookkeeping_file(match)]
        if not files:
            raise FileNotFoundError(f"only bookkeeping files (such as _SUCCESS) match the pattern '{path}'")
        files = [match for match in files if not fs.isdir(match)]
        if not files:
            raise FileNotFoundError(f"only directories match the pattern '{path}'")
        return files
    if fs.isdir(path):
        found = sorted(
            found_path for found_path in fs.find(path)
            if found_path.endswith(".parquet") and not is_bookkeeping_file(found_path)
        )
        if not found:
            raise FileNotFoundError(f"no .parquet files under the directory '{path}'")
        return found if filesystem.is_local_fs(fs) else [fs.unstrip_protocol(found_path) for found_path in found]
    if not fs.exists(path):
        raise FileNotFoundError(f"no such file or directory: '{path}'")
    return [path]


@contextlib.contextmanager
def open_parquet(path: str, buffer_size: int = 0) -> Iterator[pq.ParquetFile]:
    """A ParquetFile for `path` on any file system, closed (with its remote handle) on exit.

    Local files are opened by path, without the `file://` prefix, so Arrow reads them natively;
    `buffer_size` > 0 reads column chunks in pieces of that size (bounded memory for huge chunks).
    Pages written with checksums (as tml's writers write them) are verified as they are read.
    A file that is empty, truncated or not Parquet fails with a DataError naming it and its size
    (pyarrow's own message names neither), whether at opening or while reading it.
    """
    fs = filesystem.infer_fs(path)
    try:
        with contextlib.ExitStack() as stack:
            source = filesystem.strip_protocol(path) if filesystem.is_local_fs(fs) else stack.enter_context(
                filesystem.open_file(path, "rb")
            )
            parquet_file = pq.ParquetFile(source, buffer_size=buffer_size, page_checksum_verification=True)
            stack.callback(parquet_file.close)
            yield parquet_file
    except (pa.ArrowException, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        size = fs.size(path) if fs.exists(path) else None
        raise DataError(
            f"{path}: cannot read this Parquet file ({size} bytes): {reason}. Is it empty, truncated "
            f"(a copy cut short) or not Parquet?"
        ) from None
