"""`RemoteEdgesDataset`: TwHIN edge batches from remote reader processes over Arrow Flight.

The readers (`python -m tml.projects.twhin.data.flight_reader`) read their edge files, shuffle them
every epoch and make ready batches with their negatives (the work of `EdgesDataset`), repeating
their edges forever; this side only turns Arrow columns back into `EdgeBatch`es. Readers are read
round-robin; trainer ranks sharing a reader get disjoint batches. A reader that fails is dropped
with a warning and training goes on with the others; when all have failed the job stops with an
error naming them (see tml.common.flight). Training then runs `training.num_train_steps` steps:
`training.num_epochs` does not apply (the readers repeat their edges).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

from tml.common.batch_arrow import arrow_to_batch
from tml.common.flight import RemoteBatches
from tml.projects.twhin.data.config import TwhinDataConfig
from tml.projects.twhin.data.edges import BatchMaker, EdgeBatch
from tml.projects.twhin.data.schema import GraphSchema
from tml.projects.twhin.models.config import TwhinModelConfig


class RemoteEdgesDataset:
    def __init__(self, data_config: TwhinDataConfig, model_config: TwhinModelConfig,
                 addresses: Optional[Sequence[str]] = None) -> None:
        self.addresses = list(addresses or data_config.remote_readers or [])
        if not self.addresses:
            raise ValueError("RemoteEdgesDataset needs reader addresses (remote_readers: [host:port, ...])")
        schema = GraphSchema.from_model_config(model_config)
        maker = BatchMaker(schema, data_config.per_replica_batch_size, data_config.in_batch_negatives,
                           data_config.global_negatives, data_config.chunk_size)
        self.batch_size = maker.edges_per_batch
        self._layouts = set(maker.layouts)  # the batch shapes this trainer's config makes
        self._remote = RemoteBatches(self.addresses, decode=self._decode)

    def _decode(self, record_batch: Any) -> EdgeBatch:
        batch = arrow_to_batch(record_batch, EdgeBatch)
        if batch.layout not in self._layouts:
            raise ValueError(
                f"a reader sent batches of another shape than this trainer's config makes ({batch.layout}); "
                "start the readers with the trainers' model and train_data settings (tables, relations, "
                "per_replica_batch_size, chunk_size, negatives)"
            )
        return batch

    def __iter__(self) -> Iterator[EdgeBatch]:
        return iter(self._remote)

    def dataloader(self) -> Iterator[EdgeBatch]:
        return iter(self)
