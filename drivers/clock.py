"""The clock protocol drivers timestamp with; the supervisor injects its experiment clock."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything with a monotonic `now()` in seconds."""

    def now(self) -> float:
        """Return monotonic seconds."""
        ...


class MonotonicClock:
    """Wall monotonic time; the default when no experiment clock is injected."""

    def now(self) -> float:
        """Return `time.monotonic()`."""
        return time.monotonic()
