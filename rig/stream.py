"""One stream of immutable samples, many readers: publishing never blocks, a slow reader loses what it drops.

The control loop publishes one sample per cycle; the store, telemetry, the display, the supervisor and the live
deposit estimate each read their own bounded queue (architecture notes, principle 3). When a reader's queue is
full its OLDEST sample is dropped and counted against that reader, so a slow reader can never slow the loop and
never blocks another reader; what it lost is visible (`dropped`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

__all__ = ["SampleStream", "Subscription"]

T = TypeVar("T")


class Subscription(Generic[T]):
    """One reader's bounded queue on a `SampleStream`."""

    def __init__(self, name: str, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"subscription {name!r}: maxsize must be ≥ 1, got {maxsize}")
        self.name = name
        self.queue: asyncio.Queue[T] = asyncio.Queue(maxsize=maxsize)
        self.dropped = 0  # samples this reader lost because it was behind
        self.received = 0

    def _offer(self, sample: T) -> None:
        q = self.queue
        if q.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                q.get_nowait()
            self.dropped += 1
        q.put_nowait(sample)
        self.received += 1

    async def get(self) -> T:
        """The next sample (waits for one)."""
        return await self.queue.get()

    def drain(self) -> list[T]:
        """Every sample waiting now, oldest first (never waits)."""
        out: list[T] = []
        while True:
            try:
                out.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                return out

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            yield await self.queue.get()


class SampleStream(Generic[T]):
    """Fan-out of immutable samples to bounded subscriptions; `publish` never blocks and never raises."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._subs: list[Subscription[T]] = []
        self.published = 0
        self.latest: T | None = None

    def subscribe(self, name: str, *, maxsize: int = 1000) -> Subscription[T]:
        """A new reader; it sees samples published from now on."""
        sub: Subscription[T] = Subscription(name, maxsize)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription[T]) -> None:
        """Stop offering samples to `sub` (unknown subscriptions are ignored)."""
        with contextlib.suppress(ValueError):
            self._subs.remove(sub)

    def publish(self, sample: T) -> None:
        """Offer `sample` to every reader; a full queue drops its oldest sample (counted)."""
        self.published += 1
        self.latest = sample
        for sub in self._subs:
            sub._offer(sample)

    @property
    def dropped(self) -> dict[str, int]:
        """Samples dropped so far, per reader name."""
        return {s.name: s.dropped for s in self._subs}
