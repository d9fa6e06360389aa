"""Background prefetching and ordered parallel maps."""
from __future__ import annotations

import threading
import time

import pytest

from tml.common.prefetch import BackgroundIterator, ordered_map


def test_background_iterator_yields_everything_then_stops():
    iterator = BackgroundIterator(iter(range(10)), depth=2)
    assert list(iterator) == list(range(10))
    assert list(iterator) == []


def test_errors_reach_the_consumer():
    def failing():
        yield 1
        raise ValueError("bad file xyz")

    iterator = BackgroundIterator(failing(), depth=1)
    assert next(iterator) == 1
    with pytest.raises(ValueError, match="bad file xyz"):
        next(iterator)


def test_close_stops_an_endless_producer():
    def endless():
        while True:
            yield 0

    iterator = BackgroundIterator(endless(), depth=1, name="tml-test-endless")
    next(iterator)
    iterator.close()
    assert not any(t.name == "tml-test-endless" and t.is_alive() for t in threading.enumerate())


def test_ordered_map_keeps_input_order():
    def slow_for_small(value: int) -> int:
        time.sleep(0.001 * (5 - value))
        return value * 10

    assert list(ordered_map(slow_for_small, range(5), num_workers=3)) == [0, 10, 20, 30, 40]
    assert list(ordered_map(slow_for_small, range(3), num_workers=1)) == [0, 10, 20]
