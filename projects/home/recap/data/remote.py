"""`RemoteRecapDataset`: RecapBatches from remote reader processes over Arrow Flight.

The readers (`python -m tml.projects.home.recap.data.flight_reader`) do everything RecapDataset
does (files, decoding, preprocessing, shuffling, batching) and send ready batches; this side only
turns Arrow columns back into tensors. Readers are read round-robin; ranks that share readers get
disjoint batches. A reader that fails is dropped with a warning and training goes on with the
others; when all have failed the job stops with an error naming them (see tml.common.flight).
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Sequence

import torch

from tml.common import device
from tml.common.batch_arrow import arrow_to_batch
from tml.common.flight import RemoteBatches
from tml.projects.home.recap.data.batch import RecapBatch
from tml.projects.home.recap.data.config import RecapDataConfig
from tml.projects.home.recap.data.dataset import per_rank_batch_size


class RemoteRecapDataset(torch.utils.data.IterableDataset):
    def __init__(self, data_config: RecapDataConfig, addresses: Optional[Sequence[str]] = None,
                 world_size: Optional[int] = None) -> None:
        super().__init__()
        self.addresses = list(addresses or data_config.remote_readers or [])
        if not self.addresses:
            raise ValueError("RemoteRecapDataset needs reader addresses (remote_readers: [host:port, ...])")
        world_size = device.get_world_size() if world_size is None else world_size
        self.batch_size = per_rank_batch_size(data_config.global_batch_size, world_size)
        self._remote = RemoteBatches(self.addresses, decode=self._decode)
        self._peeked: Optional[RecapBatch] = None
        self._remote_iterator: Iterator[RecapBatch] = iter(())
        self._element_spec: Optional[dict[str, Any]] = None

    def _decode(self, record_batch: Any) -> RecapBatch:
        batch = arrow_to_batch(record_batch, RecapBatch)
        if batch.batch_size != self.batch_size:
            raise ValueError(
                f"a reader sent a batch of {batch.batch_size} rows; this rank needs {self.batch_size} "
                f"(global_batch_size / world size). Start the readers with --trainer_world_size equal to "
                f"the trainers' world size."
            )
        return batch

    def __iter__(self) -> Iterator[RecapBatch]:
        if self._peeked is not None:  # go on with the connections the peek opened
            first, self._peeked = self._peeked, None
            yield first
            yield from self._remote_iterator
            return
        yield from self._remote

    def to_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self, batch_size=None)

    @property
    def torch_element_spec(self) -> dict[str, Any]:
        """Field shapes of the first batch (kept for iteration), -1 for the batch dimension."""
        if self._element_spec is None:
            iterator = iter(self._remote)
            self._peeked = next(iterator)
            self._remote_iterator = iterator
            self._element_spec = {
                name: torch.Size([-1, *value.shape[1:]])
                for name, value in self._peeked.as_dict().items()
                if isinstance(value, torch.Tensor) and value.numel()
            }
        return self._element_spec
