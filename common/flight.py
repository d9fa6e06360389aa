"""Remote readers over Arrow Flight: reader processes serve ready batches, trainers pull them.

The original ran data-bound jobs with extra reader machines serving Arrow record batches to the
trainers over Flight (`reader/`: `serve()`, `dataloader(remote=True)`). Here:

- `BatchServer` serves one stream of record batches. Every `do_get` pulls from the same iterator,
  so several trainer processes (ranks) share a reader and get disjoint batches.
- `RemoteBatches` reads from a list of `host:port` readers round-robin, one batch from each in
  turn. A reader that fails (dies, drops the connection) is dropped with a warning and the others
  go on; when every reader has failed, iteration raises an error naming them. A reader whose data
  ends (no `repeat`) simply leaves the rotation.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable, Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.flight as flight

from tml.ml_logging.torch_logging import logging

TICKET = b"batches"


class BatchServer(flight.FlightServerBase):
    """Serves `batches` (record batches of one schema) to any number of clients, each batch once."""

    def __init__(self, batches: Iterable[pa.RecordBatch], host: str = "0.0.0.0", port: int = 0) -> None:
        super().__init__(f"grpc://{host}:{port}")
        self._batches = iter(batches)
        self._lock = threading.Lock()
        self._first: Optional[pa.RecordBatch] = None
        self._served = 0

    def _next(self) -> Optional[pa.RecordBatch]:
        with self._lock:
            if self._first is not None:
                batch, self._first = self._first, None
                return batch
            batch = next(self._batches, None)
            if batch is not None:
                self._served += 1
            return batch

    def _schema(self) -> pa.Schema:
        with self._lock:
            if self._first is None:
                self._first = next(self._batches, None)
                if self._first is None:
                    raise flight.FlightServerError("this reader has no data")
                self._served += 1
            return self._first.schema

    def do_get(self, context: flight.ServerCallContext, ticket: flight.Ticket) -> flight.FlightDataStream:
        if ticket.ticket != TICKET:
            raise flight.FlightServerError(f"unknown ticket {ticket.ticket!r}; this reader serves {TICKET!r}")
        schema = self._schema()

        def stream() -> Iterator[pa.RecordBatch]:
            while True:
                batch = self._next()
                if batch is None:
                    return
                yield batch

        return flight.GeneratorStream(schema, stream())


def serve_until_stopped(batches: Iterable[pa.RecordBatch], host: str, port: int, what: str) -> int:
    """The reader commands' main loop. `READER_PORT=<port>` goes to stdout (the port is chosen by the
    kernel when `port` is 0) so that a script starting a reader can find it."""
    server = BatchServer(batches, host=host, port=port)
    logging.info(f"serving {what} on grpc://{host}:{server.port}")
    print(f"READER_PORT={server.port}", flush=True)
    server.serve()
    return 0


class _Reader:
    def __init__(self, address: str) -> None:
        self.address = address
        self.client = flight.connect(f"grpc://{address}")
        self.stream = self.client.do_get(flight.Ticket(TICKET))

    def next(self) -> Optional[pa.RecordBatch]:
        try:
            return self.stream.read_chunk().data
        except StopIteration:
            return None

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a dead connection may fail too; nothing is left to release
            pass


class RemoteBatches:
    """Record batches from the readers at `addresses` (`host:port`), round-robin (see module doc)."""

    def __init__(self, addresses: Sequence[str], decode: Callable[[pa.RecordBatch], object] = lambda batch: batch):
        if not addresses:
            raise ValueError("no reader addresses given")
        self.addresses = list(addresses)
        self.decode = decode

    def __iter__(self) -> Iterator[object]:
        readers: list[_Reader] = []
        failed: list[str] = []
        for address in self.addresses:
            try:
                readers.append(_Reader(address))
            except (flight.FlightError, pa.ArrowException, OSError) as error:
                failed.append(f"{address} ({_reason(error)})")
                logging.warning(f"reader {address} is unreachable ({_reason(error)}); going on without it")
        try:
            while readers:
                for reader in list(readers):
                    try:
                        record_batch = reader.next()
                    except (flight.FlightError, pa.ArrowException, OSError) as error:
                        failed.append(f"{reader.address} ({_reason(error)})")
                        logging.warning(
                            f"reader {reader.address} failed ({_reason(error)}); going on with "
                            f"{len(readers) - 1} other reader(s)"
                        )
                        readers.remove(reader)
                        reader.close()
                        continue
                    if record_batch is None:  # its data ended
                        readers.remove(reader)
                        reader.close()
                        continue
                    yield self.decode(record_batch)
            if failed and not readers:
                ended_cleanly = len(failed) < len(self.addresses)
                if not ended_cleanly:
                    raise RuntimeError(f"every reader failed: {'; '.join(failed)}")
        finally:
            for reader in readers:
                reader.close()


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
