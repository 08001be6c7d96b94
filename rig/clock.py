"""The controller's experiment clock: the one place the supervisor reads time.

Same semantic as the simulator's clock (docs/decisions/0002-experiment-clock.md):
`t_exp = t0 + speed × (monotonic() − m0)`, monotonic, scaled by the configured speed.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class ExperimentClock:
    """Monotonic experiment seconds at `speed` × wall time; `offset_s` continues a resumed run's test time."""

    def __init__(
        self, speed: float = 1.0, *, offset_s: float = 0.0, wall: Callable[[], float] = time.monotonic
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self._wall = wall
        self._m0 = wall()
        self._t0 = offset_s
        self.speed = float(speed)

    def now(self) -> float:
        """Experiment seconds."""
        return self._t0 + self.speed * (self._wall() - self._m0)

    def wall_s(self, experiment_s: float) -> float:
        """Wall seconds that `experiment_s` take."""
        return experiment_s / self.speed

    async def sleep(self, experiment_s: float) -> None:
        """Sleep for `experiment_s` of experiment time."""
        import asyncio

        await asyncio.sleep(max(0.0, experiment_s) / self.speed)


def unix_now() -> float:
    """Wall-clock Unix time, for the `Unix Time / s` column only (never for durations)."""
    return time.time()
