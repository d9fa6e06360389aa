"""Candidates to score: Parquet rows in file order, as RecapBatches together with their id columns.

The training dataset shuffles rows and drops the last partial batch, and it keeps no ids; a scorer
needs every row once, in order, next to its user and tweet id. Rows are read with the data
pipeline's own reader and assembled by its own assembler in inference mode: no labels are read, and
the input-shaping preprocessors (truncate_and_slice, downcast) run where and in the order training
runs them (after mantissa masking), so candidates reach the model exactly as training data did.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import numpy as np

from tml.common.parquet import open_parquet
from tml.core.job_mode import JobMode
from tml.projects.home.recap.data.arrow_columns import column_to_numpy
from tml.projects.home.recap.data.assembly import BatchAssembler
from tml.projects.home.recap.data.batch import RecapBatch
from tml.projects.home.recap.data.chunk_source import DataStats
from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.data.file_listing import list_input_files
from tml.projects.home.recap.data.parquet_reader import ParquetChunkReader, ReadUnit
from tml.projects.home.recap.data.segdense import SegDenseFeature, load_segdense_schema, plan_features
from tml.projects.home.recap.data.shuffle import gather

USER_ID_COLUMN = "meta.user_id"
TWEET_ID_COLUMN = "meta.tweet_id"


def _id_features(schema: dict[str, SegDenseFeature], names: Sequence[str], schema_path: str) -> list[SegDenseFeature]:
    features = []
    for name in names:
        feature = schema.get(name)
        if feature is None:
            raise ValueError(
                f"id column '{name}' is not in segdense schema {schema_path}; its features: {list(schema)}"
            )
        if not feature.is_scalar or feature.dtype != "int64_list":
            raise ValueError(
                f"id column '{name}' must hold one integer per row (int64_list of length 1); the schema "
                f"says {feature.dtype} of length {feature.length}"
            )
        features.append(feature)
    return features


class CandidateReader:
    """Iterate `(ids, batch)`: `ids` maps each id column to a [B] numpy array, `batch` is a RecapBatch.

    `data_config` says how rows are laid out (schema, renamed features, preprocess); its `inputs` is
    replaced by `inputs` (a glob, or a list of files). Files are read in sorted order, rows in file order.
    """

    def __init__(
        self,
        data_config: RecapDataConfig,
        inputs: str | Sequence[str],
        id_columns: Sequence[str] = (USER_ID_COLUMN, TWEET_ID_COLUMN),
        sparse_feature_names: Sequence[str] = (),
        batch_rows: int = 1024,
    ) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be positive, got {batch_rows}")
        if isinstance(inputs, str):
            self.files = list_input_files(
                data_config.model_copy(
                    update={"inputs": inputs, "explicit_date_inputs": None, "explicit_datetime_inputs": None}
                )
            )
        else:
            self.files = list(inputs)
            if not self.files:
                raise ValueError("no candidate files given")
        schema_path = data_config.seg_dense_schema.schema_path
        schema = load_segdense_schema(schema_path)
        self.plan = plan_features(data_config, with_labels=False, schema=schema)
        self.id_columns = list(id_columns)
        self._id_features = _id_features(schema, self.id_columns, schema_path)
        self._assembler = BatchAssembler(
            data_config, self.plan, JobMode.INFERENCE, DataStats(), list(sparse_feature_names)
        )
        self._reader = ParquetChunkReader(self.plan, max_chunk_rows=max(batch_rows, 1 << 16))
        self.batch_rows = batch_rows

    def to_batch(self, columns: dict[str, Any]) -> RecapBatch:
        """A RecapBatch from columns named as the plan names them (after renaming)."""
        return self._assembler.assemble(columns, count=False)

    def _read_ids(self, path: str) -> dict[str, np.ndarray]:
        with open_parquet(path) as parquet_file:
            missing = [name for name in self.id_columns if name not in parquet_file.schema_arrow.names]
            if missing:
                raise ValueError(f"id column(s) {missing} are missing from {path}")
            table = parquet_file.read(columns=self.id_columns)
        return {
            feature.name: np.asarray(column_to_numpy(table.column(feature.name), feature, path)).reshape(-1)
            for feature in self._id_features
        }

    def __iter__(self) -> Iterator[tuple[dict[str, np.ndarray], RecapBatch]]:
        for path in self.files:
            ids = self._read_ids(path)
            offset = 0
            for chunk in self._reader.read(ReadUnit(path)):
                for start in range(0, chunk.num_rows, self.batch_rows):
                    rows = np.arange(start, min(start + self.batch_rows, chunk.num_rows))
                    batch = self.to_batch(gather([(chunk, rows)]))
                    batch_ids = {name: values[offset + start: offset + start + len(rows)] for name, values in ids.items()}
                    yield batch_ids, batch
                offset += chunk.num_rows


def first_batch(reader: CandidateReader) -> Optional[RecapBatch]:
    """The reader's first batch (e.g. an example input for export), or None when the files are empty."""
    for _, batch in reader:
        return batch
    return None
