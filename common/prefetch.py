"""Run an iterator ahead of its consumer in a background thread, and ordered parallel maps.

Arrow decoding and numpy/torch copies release the GIL, so a thread is enough to overlap data
preparation with the training step; errors are re-raised in the consumer with their traceback.

Producer threads are daemons (an abandoned iterator must never keep the process alive), and every
live one is stopped and joined by an `atexit` hook. Without it a producer could still be inside a
torch operator when the interpreter finalizes: Python then ends the thread with pthread_exit as it
re-takes the GIL, the unwinding hits one of torch's noexcept C++ frames, and the whole process
aborts with "terminate called without an active exception" (exit 134) after its work is done.
"""
from __future__ import annotations

import atexit
import collections
import concurrent.futures
import threading
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()
# A producer is stopped between two items; one item takes far less than this to make.
_EXIT_JOIN_TIMEOUT_S = 30.0

_running_lock = threading.Lock()
_running: "set[tuple[threading.Event, threading.Thread]]" = set()


def stop_all_producers(timeout_s: float = _EXIT_JOIN_TIMEOUT_S) -> None:
    """Stop every live producer thread and wait for it (called at interpreter exit)."""
    with _running_lock:
        running = list(_running)
    for stop, _ in running:
        stop.set()
    for _, thread in running:
        if thread is not threading.current_thread():
            thread.join(timeout=timeout_s)


atexit.register(stop_all_producers)


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Buffer:
    """A FIFO bounded by the total weight of its items (one item always fits)."""

    def __init__(self, capacity: int) -> None:
        self._items: "collections.deque[tuple[Any, int]]" = collections.deque()
        self._load = 0
        self._capacity = capacity
        self._changed = threading.Condition()

    def put(self, item: Any, weight: int, stop: threading.Event) -> bool:
        with self._changed:
            while self._items and self._load + weight > self._capacity:
                if stop.is_set():
                    return False
                self._changed.wait(timeout=0.1)
            self._items.append((item, weight))
            self._load += weight
            self._changed.notify_all()
            return True

    def get(self) -> Any:
        with self._changed:
            while not self._items:
                self._changed.wait()
            item, weight = self._items.popleft()
            self._load -= weight
            self._changed.notify_all()
            return item


def _produce(
    source: Iterator[Any], buffer: _Buffer, stop: threading.Event, weight: Callable[[Any], int]
) -> None:
    # A plain function holding no reference to the BackgroundIterator, so an abandoned iterator is
    # garbage collected, which sets `stop` and ends this thread.
    try:
        for item in source:
            if stop.is_set() or not buffer.put(item, weight(item), stop):
                return
        buffer.put(_END, 0, stop)
    except BaseException as error:  # noqa: BLE001 - handed to the consumer
        buffer.put(_Failure(error), 0, stop)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
        with _running_lock:
            _running.discard((stop, threading.current_thread()))


def _one(item: Any) -> int:
    return 1


class BackgroundIterator(Iterator[T]):
    """Iterates `source` in a daemon thread, keeping items of total `weight` up to `depth` ready
    (by default each item weighs 1, so `depth` counts items)."""

    def __init__(
        self, source: Iterable[T], depth: int, name: str = "tml-prefetch", weight: Callable[[T], int] = _one
    ) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth must be at least 1, got {depth}")
        self._buffer = _Buffer(depth)
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(
            target=_produce, args=(iter(source), self._buffer, self._stop, weight), name=name, daemon=True
        )
        with _running_lock:
            _running.add((self._stop, self._thread))
        self._thread.start()

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._buffer.get()
        if item is _END:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self._finished = True
            raise item.error
        return item

    def close(self) -> None:
        """Stop the producer and wait for it; safe to call more than once."""
        self._stop.set()
        self._finished = True
        self._thread.join(timeout=10)

    def __del__(self) -> None:
        self._stop.set()


def ordered_map(fn: Callable[[T], R], items: Iterable[T], num_workers: int) -> Iterator[R]:
    """`map(fn, items)` with up to `num_workers` calls in flight, results in input order."""
    if num_workers <= 1:
        for item in items:
            yield fn(item)
        return
    with concurrent.futures.ThreadPoolExecutor(num_workers, thread_name_prefix="tml-map") as pool:
        in_flight: "collections.deque[concurrent.futures.Future[R]]" = collections.deque()
        try:
            for item in items:
                in_flight.append(pool.submit(fn, item))
                if len(in_flight) > num_workers:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            for future in in_flight:
                future.cancel()
