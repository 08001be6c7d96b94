"""The shared physics model of the simulated rig (stub API; implementation lands in the same file)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

SourceMode = Literal["current", "open", "short"]


class ClockLike(Protocol):
    """The experiment clock the model runs on."""

    speed: float

    def now(self) -> float:
        """Experiment seconds."""
        ...

    def wall_s(self, experiment_s: float) -> float:
        """Wall seconds for some experiment seconds."""
        ...


@dataclass(frozen=True)
class Measurement:
    """What a source-measure unit sees at its terminals."""

    voltage_v: float
    current_a: float
    in_compliance: bool


class Axis:
    """The press axis as the stepper drive moves it. Positions in pulses; positive closes the press."""

    counter_pulses: int  # the drive's position counter (commanded pulses executed)
    moving: bool
    lost_steps_fraction: float

    def start_move(self, target_pulses: int, *, velocity_pps: float, accel_pps2: float, decel_pps2: float) -> None:
        """Start a trapezoidal move of the counter towards `target_pulses` (absolute)."""
        raise NotImplementedError

    def stop(self, *, decel_pps2: float | None = None) -> None:
        """Decelerate to a stop (immediately if `decel_pps2` is None)."""
        raise NotImplementedError


class RigModel:
    """Press, stack, deposit, creep, load-cell sensor and Na||Al cell, advanced lazily on an experiment clock."""

    clock: ClockLike
    axis: Axis

    def advance(self) -> None:
        """Integrate the physics up to `clock.now()`."""
        raise NotImplementedError

    def sensor_force_n(self, channel: str = "loadcell") -> float:
        """The force a sensor channel sees now: true force plus that channel's noise and drift (N)."""
        raise NotImplementedError

    def set_source(self, mode: SourceMode, *, current_a: float = 0.0, voltage_limit_v: float = 21.0) -> None:
        """Set what the potentiostat applies: a current with compliance, an open circuit, or a 0 V short."""
        raise NotImplementedError

    def measure(self) -> Measurement:
        """Voltage and current at the cell terminals now."""
        raise NotImplementedError
