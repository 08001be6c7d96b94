"""The sample stream: every reader gets every sample in order; a slow reader drops its oldest and is counted."""

from __future__ import annotations

import asyncio

import pytest

from rig.stream import SampleStream


async def test_every_reader_gets_every_sample_in_order() -> None:
    stream: SampleStream[int] = SampleStream("test")
    a = stream.subscribe("a", maxsize=10)
    b = stream.subscribe("b", maxsize=10)
    for i in range(5):
        stream.publish(i)
    assert a.drain() == [0, 1, 2, 3, 4]
    assert [await b.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert stream.latest == 4
    assert stream.published == 5
    assert stream.dropped == {"a": 0, "b": 0}


async def test_a_slow_reader_drops_its_oldest_and_is_counted_without_touching_the_others() -> None:
    stream: SampleStream[int] = SampleStream("test")
    slow = stream.subscribe("slow", maxsize=3)
    fast = stream.subscribe("fast", maxsize=100)
    got_fast: list[int] = []
    for i in range(10):
        stream.publish(i)  # never blocks, even though "slow" reads nothing
        got_fast.extend(fast.drain())
    assert got_fast == list(range(10))
    assert slow.drain() == [7, 8, 9]  # the newest three are kept
    assert stream.dropped == {"slow": 7, "fast": 0}
    assert slow.received == 10


async def test_a_reader_that_left_gets_nothing_more() -> None:
    stream: SampleStream[str] = SampleStream("test")
    sub = stream.subscribe("x", maxsize=2)
    stream.publish("before")
    stream.unsubscribe(sub)
    stream.unsubscribe(sub)  # twice: ignored
    stream.publish("after")
    assert sub.drain() == ["before"]


async def test_async_iteration_waits_for_the_next_sample() -> None:
    stream: SampleStream[int] = SampleStream("test")
    sub = stream.subscribe("it", maxsize=4)

    async def read_two() -> list[int]:
        out: list[int] = []
        async for s in sub:
            out.append(s)
            if len(out) == 2:
                return out
        return out

    reader = asyncio.ensure_future(read_two())
    await asyncio.sleep(0)
    assert not reader.done()
    stream.publish(1)
    stream.publish(2)
    assert await asyncio.wait_for(reader, 1.0) == [1, 2]


def test_a_queue_of_no_size_is_refused() -> None:
    stream: SampleStream[int] = SampleStream("test")
    with pytest.raises(ValueError, match="maxsize"):
        stream.subscribe("zero", maxsize=0)
