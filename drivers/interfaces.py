"""Small typed async interfaces the supervisor depends on, independent of any vendor.

Units: SI inside (N, m/µm as named, A, V, s). Names carry their unit.
Current sign convention: positive current is anodic at the working electrode (stripping Na from Al);
negative current is cathodic (plating Na onto Al). Voltage is working electrode minus counter electrode.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from drivers.errors import InvalidReadingError


@dataclass(frozen=True)
class DeviceIdentity:
    """What a device says it is."""

    device: str
    vendor: str
    model: str
    serial: str = ""
    firmware: str = ""


class ForceStatus(enum.Flag):
    """Status flags of a force reading. Any of OVERLOAD, OVERFLOW or INVALID makes it unusable."""

    OK = 0
    UNSTABLE = enum.auto()
    OVERLOAD = enum.auto()
    OVERFLOW = enum.auto()
    INVALID = enum.auto()


_BAD_FORCE = ForceStatus.OVERLOAD | ForceStatus.OVERFLOW | ForceStatus.INVALID


@dataclass(frozen=True)
class ForceReading:
    """One force sample. Never a bare float: use `force_n()` which refuses invalid data."""

    seq: int
    t_s: float
    status: ForceStatus
    value_n: float | None
    raw: str = ""

    @classmethod
    def make(cls, *, seq: int, t_s: float, value_n: float | None, status: ForceStatus, raw: str = "") -> ForceReading:
        """Build a reading; a non-finite or missing value becomes INVALID with no number."""
        if value_n is None or not math.isfinite(value_n):
            return cls(seq=seq, t_s=t_s, status=status | ForceStatus.INVALID, value_n=None, raw=raw)
        return cls(seq=seq, t_s=t_s, status=status, value_n=float(value_n), raw=raw)

    @property
    def valid(self) -> bool:
        """True when the reading may be used as a force."""
        return not (self.status & _BAD_FORCE) and self.value_n is not None

    def force_n(self) -> float:
        """The force in newtons; raises `InvalidReadingError` for an invalid reading."""
        if not self.valid or self.value_n is None:
            raise InvalidReadingError(f"force reading #{self.seq} is not usable: {self.status!r} raw={self.raw!r}")
        return self.value_n


@runtime_checkable
class ForceSensor(Protocol):
    """A load cell or force gauge."""

    name: str

    async def connect(self) -> None:
        """Open the link (idempotent)."""
        ...

    async def close(self) -> None:
        """Close the link."""
        ...

    async def identify(self) -> DeviceIdentity:
        """Return the device identity."""
        ...

    async def read(self) -> ForceReading:
        """Return one fresh reading; transport failures raise `DeviceError`."""
        ...

    async def tare(self) -> None:
        """Tare at the present load."""
        ...

    async def zero(self) -> None:
        """Zero the sensor."""
        ...


@dataclass(frozen=True)
class PressStatus:
    """Drive status decoded from the motion-status and alarm registers."""

    enabled: bool
    moving: bool
    done: bool
    fault: bool
    alarm_code: int
    position_um: float
    raw_status: int = 0


@runtime_checkable
class Press(Protocol):
    """A stepper-actuated uniaxial press. Positive motion closes the press (compresses the stack)."""

    name: str
    um_per_pulse: float

    async def connect(self) -> None:
        """Open the link (idempotent)."""
        ...

    async def close(self) -> None:
        """Close the link."""
        ...

    async def identify(self) -> DeviceIdentity:
        """Return the device identity."""
        ...

    async def enable(self) -> None:
        """Enable the drive; raises `DeviceAlarm` if an alarm is active (never reset silently)."""
        ...

    async def verify_safe(self, lower_um: float, upper_um: float) -> dict[str, object]:
        """The start-up check: set and read back the travel limits; refuse an alarm, a fault or a disabled drive."""
        ...

    async def move_relative_um(self, delta_um: float) -> int:
        """Start a relative move; returns the pulses commanded (quantised)."""
        ...

    async def move_absolute_um(self, position_um: float) -> int:
        """Start an absolute move; returns the target in pulses."""
        ...

    async def position_um(self) -> float:
        """Return the drive's position counter in µm."""
        ...

    async def set_motion_limits(self, *, velocity_rpm: int, accel_ms_per_krpm: int, decel_ms_per_krpm: int) -> None:
        """Set velocity, acceleration and deceleration of PR moves."""
        ...

    async def set_travel_limits_um(self, lower_um: float, upper_um: float) -> None:
        """Set and enable the drive's software travel limits."""
        ...

    async def travel_limits_um(self) -> tuple[bool, float, float]:
        """Read back (enabled, lower_um, upper_um)."""
        ...

    async def stop(self) -> None:
        """Stop motion (decelerating)."""
        ...

    async def emergency_stop(self) -> None:
        """Emergency stop."""
        ...

    async def status(self) -> PressStatus:
        """Read status, alarm code and position."""
        ...


@dataclass(frozen=True)
class GalvanostaticConfig:
    """A galvanostatic step. `None` ranges mean auto-range."""

    current_a: float
    voltage_limit_v: float
    current_range_a: float | None = None
    voltage_range_v: float | None = None
    nplc: float = 1.0
    four_wire: bool = False


@dataclass(frozen=True)
class PotentiostatReading:
    """One reading. `voltage_v()` refuses an overrange or non-finite value."""

    t_s: float
    instrument_time_s: float | None
    value_v: float | None
    current_a: float
    in_compliance: bool
    overrange: bool
    raw: str = ""

    @property
    def valid(self) -> bool:
        """True when the voltage may be used as a number."""
        return not self.overrange and self.value_v is not None and math.isfinite(self.value_v)

    def voltage_v(self) -> float:
        """The voltage; raises `InvalidReadingError` when overrange or non-finite."""
        if not self.valid or self.value_v is None:
            raise InvalidReadingError(f"potentiostat reading is not usable: raw={self.raw!r}")
        return self.value_v


@dataclass(frozen=True)
class PotentiostatSafety:
    """Safety-relevant settings as read back from the instrument."""

    output_off_mode: str
    voltage_limit_v: float
    output_on: bool
    source_function: str
    errors: tuple[str, ...] = field(default_factory=tuple)


@runtime_checkable
class Potentiostat(Protocol):
    """A galvanostat / source-measure unit."""

    name: str

    async def connect(self) -> None:
        """Open the link (idempotent)."""
        ...

    async def close(self) -> None:
        """Close the link."""
        ...

    async def identify(self) -> DeviceIdentity:
        """Return the device identity."""
        ...

    async def configure_galvanostatic(self, config: GalvanostaticConfig) -> None:
        """Configure a galvanostatic step (output state unchanged)."""
        ...

    async def output(self, on: bool) -> None:
        """Switch the output on or off."""
        ...

    async def set_current_a(self, current_a: float) -> None:
        """Change the source current, output on or off."""
        ...

    async def read(self) -> PotentiostatReading:
        """Take one reading."""
        ...

    async def safety_settings(self) -> PotentiostatSafety:
        """Read back the output-off mode, compliance, output state and error queue."""
        ...
