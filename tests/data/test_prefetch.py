"""The prefetching iterator: the same items in the same order, errors where they happened, a thread that stops."""

import itertools

import pytest

from catneuron.data.prefetch import Prefetch


def test_same_items_in_the_same_order_then_the_end():
    items = Prefetch(iter(range(50)))
    assert list(items) == list(range(50))
    with pytest.raises(StopIteration):
        next(items)


def test_an_error_is_raised_by_the_next_that_would_have_returned_its_item():
    def made():
        yield from range(3)
        raise ValueError("corrupt shard")

    items = Prefetch(made())
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="corrupt shard"):
        next(items)


def test_close_stops_an_endless_stream():
    with Prefetch(itertools.count(), ahead=2) as items:
        assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    assert not items._thread.is_alive()
