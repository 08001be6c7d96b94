"""The simulator's experiment clock.

Experiment time is `t_exp = t0_exp + speed * (monotonic() - m0)`. It is monotonic and starts at 0 when the
simulated rig starts. Changing the speed re-bases (m0, t0_exp) so time never jumps. The controller side uses the
same semantic with the same speed (see docs/decisions/0002-experiment-clock.md), and can read the simulator's
clock over the wire from the potentiostat's relative timestamp.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class SimClock:
    """Monotonic experiment time running at `speed` x wall time."""

    def __init__(self, speed: float = 1.0, *, wall: Callable[[], float] = time.monotonic) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self._wall = wall
        self._m0 = wall()
        self._t0 = 0.0
        self._speed = float(speed)

    @property
    def speed(self) -> float:
        """The current time-scale factor."""
        return self._speed

    def now(self) -> float:
        """Experiment seconds since start."""
        return self._t0 + self._speed * (self._wall() - self._m0)

    def set_speed(self, speed: float) -> None:
        """Change the time scale without a jump in experiment time."""
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        now = self.now()
        self._m0 = self._wall()
        self._t0 = now
        self._speed = float(speed)

    def wall_s(self, experiment_s: float) -> float:
        """Wall seconds that `experiment_s` of experiment time take at the current speed."""
        return experiment_s / self._speed


class ManualClock:
    """A clock moved by hand, for pure tests of the physics."""

    def __init__(self, t0: float = 0.0) -> None:
        self._t = t0
        self.speed = 1.0

    def now(self) -> float:
        """Current experiment seconds."""
        return self._t

    def advance(self, dt_s: float) -> None:
        """Move time forward by `dt_s` (never backwards)."""
        if dt_s < 0:
            raise ValueError("time never runs backwards")
        self._t += dt_s

    def set_speed(self, speed: float) -> None:
        """Accepted for interface parity; manual time has no rate."""
        self.speed = speed

    def wall_s(self, experiment_s: float) -> float:
        """Manual time takes no wall time."""
        return 0.0
