"""`RecapDataset`: Parquet (or the original's gzip TFRecord) files to `RecapBatch`es for one rank, prepared in a background thread.

Per pass: the file list is shuffled (same order on every rank), each rank takes its share (whole
files, or row groups when there are fewer files than ranks), chunks stream through a shuffle pool
into batches of global_batch_size / world_size rows (times the downsampling batch multiplier), which
are assembled into RecapBatches. `repeat=True` runs passes forever. A last partial batch is dropped,
except in evaluation mode without repeat: there every row counts, so it is filled up to the batch
size with rows of label 0 and weight 0 (each rank its own last batch).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import torch

from tml.common import device
from tml.core.job_mode import JobMode
from tml.ml_logging.torch_logging import logging
from tml.projects.home.recap.data.assembly import BatchAssembler
from tml.projects.home.recap.data.batch import RecapBatch
from tml.projects.home.recap.data.chunk_source import ChunkSource, DataStats, SourceOptions
from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.data.file_listing import list_input_files
from tml.projects.home.recap.data.input_spec import input_spec
from tml.projects.home.recap.data.parquet_reader import ParquetChunkReader
from tml.common.prefetch import BackgroundIterator, ordered_map
from tml.projects.home.recap.data.segdense import plan_features
from tml.projects.home.recap.data.sharding import pass_rng
from tml.projects.home.recap.data.tfrecord_reader import DataFileReader, TFRecordChunkReader
from tml.projects.home.recap.data.shuffle import ShufflePool
from tml.projects.home.recap.data.validation import RowChecks

# Row groups larger than this are read in slices, so memory stays bounded whatever the writer chose.
MAX_CHUNK_BYTES = 256 << 20
# TFRecord examples decoded per chunk (they are parsed one by one; this only bounds the list).
TFRECORD_CHUNK_ROWS = 1024


def per_rank_batch_size(global_batch_size: int, world_size: int) -> int:
    if global_batch_size % world_size:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not divisible by the world size {world_size}; "
            f"every rank must read the same number of rows"
        )
    return global_batch_size // world_size


class RecapDataset(torch.utils.data.IterableDataset):
    def __init__(
        self,
        data_config: RecapDataConfig,
        dataset_service: Optional[str] = None,
        mode: JobMode = JobMode.TRAIN,
        compression: Optional[str] = "AUTO",
        repeat: bool = False,
        vocab_mapper: Optional[Callable[[dict], dict]] = None,
        *,
        sparse_feature_names: Optional[Sequence[str]] = None,
        sparse_table_sizes: Optional[Mapping[str, int]] = None,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ) -> None:
        """`dataset_service`/`compression` exist for the original's signature and are ignored (no tf.data
        service). `vocab_mapper(features) -> features` runs after preprocessing; its `vocabs` keys (if
        any) name the sparse features, unless `sparse_feature_names` is given."""
        super().__init__()
        self._config = data_config
        self._mode = JobMode(mode)
        self._repeat = repeat
        self._rank = device.get_rank() if rank is None else rank
        self._world_size = device.get_world_size() if world_size is None else world_size
        if dataset_service is not None or data_config.data_service_dispatcher is not None:
            logging.warning("the tf.data service is not used: every rank reads its own share of the files")
        logging.debug(f"labels: {list(data_config.tasks)}")  # the same list for every data set: once at INFO is enough (job.py)

        self.plan = plan_features(data_config, with_labels=self._mode != JobMode.INFERENCE)
        self.files = list_input_files(data_config)
        logging.info(f"{len(self.files)} data files")
        downsample = data_config.preprocess.downsample_negatives if data_config.preprocess else None
        multiplier = (downsample.batch_multiplier or 1) if downsample and self._mode != JobMode.INFERENCE else 1
        if downsample and self._mode != JobMode.INFERENCE and downsample.num_engagements != len(data_config.tasks):
            raise ValueError(
                f"downsample_negatives.num_engagements is {downsample.num_engagements} but there are "
                f"{len(data_config.tasks)} tasks; weights need one column per label"
            )
        self.batch_size = per_rank_batch_size(data_config.global_batch_size, self._world_size)
        self.read_rows = multiplier * self.batch_size
        if not repeat and self._world_size > 1:
            logging.info("without repeat, ranks may yield different numbers of batches at the end of the data")

        if sparse_feature_names is None:
            sparse_feature_names = list(getattr(vocab_mapper, "vocabs", {}) or {})
        self.stats = DataStats()
        self._assembler = BatchAssembler(
            data_config, self.plan, self._mode, self.stats, sparse_feature_names, vocab_mapper
        )
        # Ids are checked against their tables when they are rows already (a vocab maps them later).
        checks = RowChecks(
            label_columns=[column.feature.name for column in self.plan.columns if column.is_label],
            table_sizes=dict(sparse_table_sizes or {}) if vocab_mapper is None else {},
            soft_labels=data_config.soft_labels,
            ignore_data_errors=data_config.ignore_data_errors,
            on_drop=lambda count: self.stats.add(dropped_rows=count),
        )
        self._source = ChunkSource(
            DataFileReader(
                ParquetChunkReader(
                    self.plan, max_chunk_rows=max(1, MAX_CHUNK_BYTES // self.plan.row_bytes), checks=checks
                ),
                TFRecordChunkReader(self.plan, rows_per_chunk=TFRECORD_CHUNK_ROWS),
            ),
            SourceOptions(
                files=self.files,
                rank=self._rank,
                world_size=self._world_size,
                seed=data_config.seed,
                repeat=repeat,
                file_batch_size=data_config.file_batch_size,
                parallel_reads=data_config.interleave_num_parallel_calls or 1,
                ignore_data_errors=data_config.ignore_data_errors,
                cache=data_config.cache,
            ),
            self.stats,
        )

    def _batches(self) -> Iterator[RecapBatch]:
        pool = ShufflePool(
            self.read_rows,
            self._config.examples_shuffle_buffer_size,
            pass_rng(self._config.seed, -1, self._rank),
            widths=self._assembler.gather_widths,
        )

        def plans():
            chunks = self._source.chunks()
            if self._config.prefetch > 0:
                # Reading overlaps batch assembly (Arrow releases the GIL); rows for about two
                # batches are read ahead so that a large batch does not wait for its chunks.
                chunks = BackgroundIterator(
                    chunks, depth=2 * self.read_rows, name="tml-read-ahead", weight=lambda chunk: chunk.num_rows
                )
            try:
                for chunk in chunks:
                    yield from pool.add(chunk)
                yield from pool.drain(pad_last=self._mode == JobMode.EVALUATE and not self._repeat)
            finally:
                if isinstance(chunks, BackgroundIterator):
                    chunks.close()

        yield from ordered_map(self._assembler, plans(), self._config.map_num_parallel_calls or 1)

    def __iter__(self) -> Iterator[RecapBatch]:
        if self._config.prefetch == 0:
            return self._batches()
        return BackgroundIterator(self._batches(), depth=self._config.prefetch)

    def to_dataloader(self) -> torch.utils.data.DataLoader:
        """Batches are made here, so the loader neither batches (batch_size=None) nor forks workers."""
        return torch.utils.data.DataLoader(self, batch_size=None)

    @property
    def torch_element_spec(self) -> dict[str, torch.Size]:
        """Shape of each input and label field with -1 for the batch dimension (`input_spec`)."""
        return input_spec(self._config, with_labels=self._mode != JobMode.INFERENCE).shapes
