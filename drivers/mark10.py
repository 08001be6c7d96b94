"""Mark-10 force gauge over its USB virtual COM port (ASCII): `Mark10` implements `ForceSensor`.

Wire protocol (devices.md §2): send `?\\r\\n` and the gauge answers one line such as `12.3 N`. The unit
follows the gauge setting (N, kN, mN, lbF, kgF, gF, ozF) and is converted to newtons here. `N\\r\\n` switches
the gauge to newtons and `Z\\r\\n` zeroes it. A reply must come within about 1 s.

Streaming gauges: some gauges send readings continuously. Before each query the line discards what is
buffered (stale readings), and a first line whose head was discarded is skipped rather than parsed: the tail
of `12.3 N` is `2.3 N`, which would parse. Set `streaming=True` for a gauge that streams; then the first line
is also skipped when the line cannot tell whether it starts cleanly (right after opening). Either way, when
several complete lines have arrived, the newest wins.

Invalid data is never a number: an unparsable line, `nan`/`inf`, an unknown unit, or a unit other than the
expected one gives a reading with status INVALID and no value. |F| above `capacity_n` gives OVERLOAD; the
value is kept for diagnosis but `force_n()` refuses it. A line starting with "OVER" (overload text; what a
real gauge sends past capacity is not documented) is OVERLOAD and INVALID with no value.

Identity: the ASCII protocol has no reliable identity query, so `identify()` returns the configured identity.
Zero and tare: the gauge has one zero function (`Z`), which zeroes at the present load; both map to it.
Sign: the gauge's sign is passed through unless `invert_sign=True`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from drivers.clock import Clock, MonotonicClock
from drivers.errors import DeviceDisconnected, DeviceProtocolError
from drivers.interfaces import DeviceIdentity, ForceReading, ForceStatus
from drivers.serial_line import PortFinder, SerialLine, find_port_by_usb_serial

__all__ = ["MARK10_UNITS_TO_N", "Mark10", "Mark10Line", "parse_mark10_line"]

#: Newtons per unit, keyed by the canonical unit spelling.
MARK10_UNITS_TO_N: dict[str, float] = {
    "N": 1.0,
    "kN": 1000.0,
    "mN": 1e-3,
    "lbF": 4.4482216152605,
    "kgF": 9.80665,
    "gF": 9.80665e-3,
    "ozF": 0.27801385095378125,
}
# Force-unit spellings are matched case-insensitively; the newton family is case-sensitive (mN is not MN).
_F_UNITS = {name.lower(): name for name in MARK10_UNITS_TO_N if name.endswith("F")}

_LINE_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-z]+)?$")

_QUERY = b"?\r\n"
_ZERO = b"Z\r\n"
_NEWTONS = b"N\r\n"


def _canonical_unit(unit: str) -> str | None:
    """The canonical spelling of a Mark-10 unit, or None when unknown."""
    if unit in MARK10_UNITS_TO_N:
        return unit
    return _F_UNITS.get(unit.lower())


@dataclass(frozen=True)
class Mark10Line:
    """One parsed reply line: the value in newtons (None when unusable), the unit seen and why it failed."""

    value_n: float | None
    unit: str | None
    problem: str = ""
    overload: bool = False


def parse_mark10_line(raw: bytes, *, expected_unit: str | None = None) -> Mark10Line:
    """Parse one reply line such as b"12.3 N\\r\\n"; never returns a non-finite value."""
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        return Mark10Line(None, None, "not ASCII")
    if text.upper().startswith("OVER"):
        return Mark10Line(None, None, "the gauge reports overload", overload=True)
    match = _LINE_RE.match(text)
    if match is None:
        return Mark10Line(None, None, "not '<number> <unit>'")
    number, unit_text = match.groups()
    value = float(number)
    if not math.isfinite(value):
        return Mark10Line(None, None, "not a finite number")
    if unit_text is None:
        if expected_unit is None:
            return Mark10Line(None, None, "no unit in the reply and no expected unit configured")
        unit = expected_unit
    else:
        found = _canonical_unit(unit_text)
        if found is None:
            return Mark10Line(None, unit_text, f"unknown unit {unit_text!r}")
        unit = found
    if expected_unit is not None and unit != expected_unit:
        return Mark10Line(None, unit, f"unit {unit} is not the expected {expected_unit}")
    value_n = value * MARK10_UNITS_TO_N[unit]
    if not math.isfinite(value_n):
        return Mark10Line(None, unit, "not a finite force")
    return Mark10Line(value_n, unit)


class Mark10:
    """Mark-10 force gauge polled with `?` over a serial line (USB virtual COM port or socket:// bridge)."""

    def __init__(
        self,
        *,
        name: str,
        url: str | None = None,
        usb_serial_number: str | None = None,
        baudrate: int = 115200,
        timeout_s: float = 1.0,
        capacity_n: float | None = None,
        expected_unit: str | None = None,
        streaming: bool = False,
        invert_sign: bool = False,
        clock: Clock | None = None,
        model: str = "force gauge",
        serial_number: str = "",
        firmware: str = "",
        port_finder: PortFinder = find_port_by_usb_serial,
    ) -> None:
        if timeout_s <= 0 or not math.isfinite(timeout_s):
            raise ValueError(f"{name}: timeout_s must be a positive number of seconds, not {timeout_s!r}")
        if capacity_n is not None and (capacity_n <= 0 or not math.isfinite(capacity_n)):
            raise ValueError(f"{name}: capacity_n must be a positive number of newtons, not {capacity_n!r}")
        unit = None if expected_unit is None else _canonical_unit(expected_unit)
        if expected_unit is not None and unit is None:
            known = ", ".join(MARK10_UNITS_TO_N)
            raise ValueError(f"{name}: expected_unit {expected_unit!r} is not one of {known}")
        self.name = name
        self.timeout_s = timeout_s
        self.capacity_n = capacity_n
        self.expected_unit = unit
        self.streaming = streaming
        self.invert_sign = invert_sign
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._identity = DeviceIdentity(
            device=name,
            vendor="Mark-10",
            model=model,
            serial=serial_number or (usb_serial_number or ""),
            firmware=firmware,
        )
        self._line = SerialLine(
            device=name,
            url=url,
            usb_serial_number=usb_serial_number,
            baudrate=baudrate,
            eol=b"\n",
            port_finder=port_finder,
        )
        self._seq = 0

    async def connect(self) -> None:
        """Open the serial line (idempotent)."""
        await self._line.open()

    async def close(self) -> None:
        """Close the serial line and its worker thread."""
        await self._line.close()

    async def identify(self) -> DeviceIdentity:
        """Return the configured identity: the Mark-10 ASCII protocol has no reliable identity query."""
        return self._identity

    async def read(self) -> ForceReading:
        """Query one reading; an unusable line is an INVALID reading, silence raises `DeviceTimeout`.

        After a lost port the read is tried once more on the reopened port (a reading is idempotent).
        """
        try:
            raw = await self._query()
        except DeviceDisconnected:
            raw = await self._query()
        t_s = self._clock.now()
        parsed = parse_mark10_line(raw, expected_unit=self.expected_unit)
        return self._reading(raw, parsed, t_s)

    async def zero(self) -> None:
        """Zero the gauge at the present load (`Z`); the gauge sends no acknowledgement."""
        await self._line.write(_ZERO, timeout_s=self.timeout_s, command="Z")

    async def tare(self) -> None:
        """Tare at the present load: on a Mark-10 this is the same `Z` command as `zero()`."""
        await self.zero()

    async def set_unit_newtons(self) -> None:
        """Switch the gauge to newtons (`N`) and check that the next reading is in N."""
        await self._line.write(_NEWTONS, timeout_s=self.timeout_s, command="N")
        raw = await self._query()
        parsed = parse_mark10_line(raw, expected_unit=None)
        if parsed.unit != "N" or parsed.value_n is None:
            detail = "after switching to newtons the gauge does not report N"
            raise DeviceProtocolError(self.name, "N", detail, raw)
        if self.expected_unit is not None:
            self.expected_unit = "N"

    async def _query(self) -> bytes:
        """One `?` exchange on the line."""
        return await self._line.query_line(
            _QUERY, timeout_s=self.timeout_s, command="?", skip_partial_when_unknown=self.streaming
        )

    def _reading(self, raw: bytes, parsed: Mark10Line, t_s: float) -> ForceReading:
        """Build the typed reading with seq, status and overload check."""
        self._seq += 1
        text = raw.decode("ascii", errors="backslashreplace").rstrip("\r\n")
        value_n = parsed.value_n
        status = ForceStatus.OK
        if value_n is None:
            status = ForceStatus.INVALID | (ForceStatus.OVERLOAD if parsed.overload else ForceStatus.OK)
        else:
            if self.invert_sign:
                value_n = -value_n
            if self.capacity_n is not None and abs(value_n) > self.capacity_n:
                status = ForceStatus.OVERLOAD
        return ForceReading.make(seq=self._seq, t_s=t_s, value_n=value_n, status=status, raw=text)
