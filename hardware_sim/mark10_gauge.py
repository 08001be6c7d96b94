"""Simulated Mark-10 force gauge (Series 5 class): the ASCII bytes of its USB virtual COM port over TCP.

Reach it as a pyserial URL, `socket://127.0.0.1:PORT`. The command set is Mark-10's "Gauge Control Language
2" (GCL2) as published in the Series 5 user's guide (the Omega DFG55 is the same gauge with the same set):

- Commands end with CR or CR LF (a lone LF is ignored too); replies always end with CR LF.
- `?` (displayed reading, follows the mode) and `?C` (current reading) answer one line `<value> <unit>`, e.g.
  `12.34 N`; `?PT` / `?PC` answer the peak tension / compression since the last `Z` or `CLR`. Compression is
  positive, tension negative, as in the guide's examples (`-18.78 lbF` is tension, `4.285 N` compression).
- Units: `LB` (lbF), `OZ` (ozF), `KG` (kgF), `G` (gF), `N` (N), `MN` (mN), `KN` (kN). Not `LBF`, not `NEWTON`.
- `Z` zeroes the display at the present load and clears the peaks; `CLR` clears the peaks; `CUR` / `PT` / `PC`
  select what `?` reports.
- `AOUTn` switches auto output (streaming) at n readings per second, `AOUT0` stops it. The real gauge sets its
  auto-output rate in a menu and only lists an `AOUT..` field in `LIST`; the numeric meaning here is this
  simulator's choice. Streaming can also be on from the start (`stream_hz`).
- An unknown command answers `*10` (the guide's "illegal command" code).
- Setting commands send no acknowledgement (`command_ack=b""`); pass e.g. `command_ack=b"R\\r\\n"` to model a
  unit that acknowledges. Not verified against a real gauge.

Resolution: the gauge shows about 1/10 000 of its capacity, rounded to a 1-2-5 step in each unit. For the
100 N capacity (a Series 5 M5-20) that is 0.01 N, 0.002 lbF, 0.05 ozF, 0.001 kgF, 1 gF, 10 mN, 0.00001 kN.

Overload: the real gauge flags an overload on the display past its capacity; what its serial output then
carries is not documented. Here the reading is clamped at `overload_fraction` × capacity (110 %): a number
past capacity, which a driver must treat as overload. With `overload_text="OVER"` the line carries that text
instead. The `overload` fault forces it at any load.

Streaming: a client that connects while the gauge streams first receives the tail of a line (as if it opened
the port mid-line), then whole lines. Line timing: every reply waits `timing.frame_s(request + reply bytes)`
of wall time, and stream lines are never closer than their own wire time.

Faults (`faults`, supported GAUGE_FAULTS): no_reply (silent, streaming stops too), delay_s (extra wall delay
per reply), corrupt (the reply's bytes are garbage, CR LF kept), stuck (the value freezes at the last one
reported), overload (as above), disconnect (connections dropped, new ones closed at once), nan (`nan <unit>`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from dataclasses import dataclass
from typing import Literal

from hardware_sim._tcp_server import DeviceTcpServer
from hardware_sim.faults import GAUGE_FAULTS, Faults
from hardware_sim.line_timing import LineTiming
from hardware_sim.model import RigModel

GaugeMode = Literal["CUR", "PT", "PC"]


@dataclass(frozen=True)
class GaugeUnit:
    """One display unit: its command, how it is printed, and newtons per unit."""

    command: str
    label: str
    n_per_unit: float


UNITS: dict[str, GaugeUnit] = {
    u.command: u
    for u in (
        GaugeUnit("N", "N", 1.0),
        GaugeUnit("LB", "lbF", 4.4482216152605),
        GaugeUnit("KG", "kgF", 9.80665),
        GaugeUnit("G", "gF", 9.80665e-3),
        GaugeUnit("OZ", "ozF", 0.27801385095378125),
        GaugeUnit("MN", "mN", 1e-3),
        GaugeUnit("KN", "kN", 1e3),
    )
}
_LABEL_TO_COMMAND = {u.label.upper(): u.command for u in UNITS.values()}

ILLEGAL_COMMAND = b"*10\r\n"


def nice_step(x: float) -> float:
    """The 1-2-5 step nearest to `x` on a log scale."""
    if x <= 0:
        raise ValueError(f"step must be positive, got {x}")
    decade = 10.0 ** math.floor(math.log10(x))
    best = min((1.0, 2.0, 5.0, 10.0), key=lambda m: abs(math.log10(m * decade / x)))
    return best * decade


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


class Mark10Gauge:
    """A Mark-10 force gauge on a simulated USB virtual COM port (TCP server carrying its bytes)."""

    def __init__(
        self,
        model: RigModel,
        *,
        timing: LineTiming,
        capacity_n: float = 100.0,
        channel: str = "gauge",
        unit: str = "N",
        stream_hz: float = 0.0,
        send_units: bool = True,
        command_ack: bytes = b"",
        overload_fraction: float = 1.1,
        overload_text: str | None = None,
        seed: int = 0,
    ) -> None:
        if capacity_n <= 0:
            raise ValueError(f"capacity_n must be positive, got {capacity_n}")
        if unit.upper() not in UNITS and unit.upper() not in _LABEL_TO_COMMAND:
            raise ValueError(f"unknown unit {unit!r}; known: {sorted(UNITS)}")
        if stream_hz < 0:
            raise ValueError(f"stream_hz must be >= 0, got {stream_hz}")
        self.model = model
        self.timing = timing
        self.capacity_n = capacity_n
        self.channel = channel
        self.unit: GaugeUnit = UNITS.get(unit.upper()) or UNITS[_LABEL_TO_COMMAND[unit.upper()]]
        self.stream_hz = stream_hz
        self.send_units = send_units
        self.command_ack = command_ack
        self.overload_fraction = overload_fraction
        self.overload_text = overload_text
        self.mode: GaugeMode = "CUR"
        self.zero_offset_n = 0.0
        self.faults = Faults(supported=GAUGE_FAULTS)
        self._rng = random.Random(seed)
        self._peak_compression_n = 0.0
        self._peak_tension_n = 0.0
        self._last_n: float | None = None
        self._stuck_n: float | None = None
        self._server = DeviceTcpServer(name="mark10", handler=self._serve, faults=self.faults)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> int:
        """Start listening on 127.0.0.1 (a free port); returns the port."""
        return await self._server.start()

    async def close(self) -> None:
        """Stop listening and drop all connections."""
        await self._server.close()

    @property
    def port(self) -> int:
        """The bound TCP port (0 before `start()`)."""
        return self._server.port

    @property
    def url(self) -> str:
        """The pyserial URL of this gauge's line."""
        return f"socket://127.0.0.1:{self._server.port}"

    @property
    def connection_count(self) -> int:
        """How many peers are connected now."""
        return self._server.connection_count

    @property
    def connections_accepted(self) -> int:
        """How many connections were served since start."""
        return self._server.accepted

    # ------------------------------------------------------------------ readings
    def resolution(self, unit: GaugeUnit | None = None) -> float:
        """Display resolution in `unit` (default: the present unit)."""
        u = unit or self.unit
        return nice_step(self.capacity_n / u.n_per_unit / 10_000)

    def _sample_n(self) -> float:
        """The zeroed force now, with the stuck fault applied, updating the peaks (N)."""
        if self.faults.stuck:
            if self._stuck_n is None:
                self._stuck_n = (
                    self._last_n
                    if self._last_n is not None
                    else self.model.sensor_force_n(self.channel) - self.zero_offset_n
                )
            value = self._stuck_n
        else:
            self._stuck_n = None
            value = self.model.sensor_force_n(self.channel) - self.zero_offset_n
        limit = self.overload_fraction * self.capacity_n
        if self.faults.overload or abs(value) > limit:
            value = math.copysign(limit, value) if value != 0 else limit
        self._last_n = value
        self._peak_compression_n = max(self._peak_compression_n, value)
        self._peak_tension_n = min(self._peak_tension_n, value)
        return value

    def _overloaded(self, value_n: float) -> bool:
        return self.faults.overload or abs(value_n) >= self.overload_fraction * self.capacity_n

    def format_value(self, value_n: float) -> str:
        """One reading as the gauge prints it, without the line end."""
        step = self.resolution()
        x = round(value_n / self.unit.n_per_unit / step) * step
        text = f"{x:.{_decimals(step)}f}"
        if float(text) == 0:
            text = text.lstrip("-")
        return f"{text} {self.unit.label}" if self.send_units else text

    def _reading_line(self, which: str) -> bytes:
        if self.faults.nan:
            return f"nan {self.unit.label}\r\n".encode() if self.send_units else b"nan\r\n"
        value = self._sample_n()
        if which == "PT" or (which == "?" and self.mode == "PT"):
            value = self._peak_tension_n
        elif which == "PC" or (which == "?" and self.mode == "PC"):
            value = self._peak_compression_n
        if self.overload_text is not None and self._overloaded(value):
            return f"{self.overload_text}\r\n".encode()
        return f"{self.format_value(value)}\r\n".encode()

    def _clear_peaks(self) -> None:
        self._peak_compression_n = 0.0
        self._peak_tension_n = 0.0

    def zero(self) -> None:
        """Zero at the present load (what `Z` does)."""
        self.zero_offset_n = self.model.sensor_force_n(self.channel)
        self._last_n = None
        self._clear_peaks()

    def respond(self, command: str) -> bytes:
        """The reply to one command (without its terminator); empty for a silent setting command."""
        c = command.strip().upper()
        if c in ("?", "?C", "?PT", "?PC"):
            return self._reading_line({"?": "?", "?C": "CUR", "?PT": "PT", "?PC": "PC"}[c])
        if c in UNITS:
            self.unit = UNITS[c]
            return self.command_ack
        if c == "Z":
            self.zero()
            return self.command_ack
        if c == "CLR":
            self._clear_peaks()
            return self.command_ack
        if c in ("CUR", "PT", "PC"):
            self.mode = c  # type: ignore[assignment]
            return self.command_ack
        if c.startswith("AOUT") and c[4:].isdigit():
            self.stream_hz = float(int(c[4:]))
            return self.command_ack
        return ILLEGAL_COMMAND

    def _garble(self, reply: bytes) -> bytes:
        body = reply[:-2] if reply.endswith(b"\r\n") else reply
        junk = bytes(self._rng.randrange(0x80, 0x100) for _ in range(max(len(body), 1)))
        return junk + b"\r\n"

    # ------------------------------------------------------------------ wire
    def _stream_period_s(self, line: bytes) -> float:
        return max(1.0 / self.stream_hz, self.timing.frame_s(len(line)))

    def _streaming(self) -> bool:
        return self.stream_hz > 0 and not self.faults.no_reply

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        buf = bytearray()
        first_stream_line = self._streaming()  # only a client that joins a running stream lands mid-line
        next_line_at: float | None = None
        while True:
            timeout: float | None = None
            if self._streaming():
                if next_line_at is None:
                    next_line_at = loop.time()
                timeout = max(0.0, next_line_at - loop.time())
            else:
                next_line_at = None
            try:
                data = await asyncio.wait_for(reader.read(1024), timeout)
            except TimeoutError:
                line = self._reading_line("?")
                out = line
                if first_stream_line:
                    out = line[max(1, len(line) // 2) :]  # joined the line mid-line
                    first_stream_line = False
                if self.faults.corrupt:
                    out = self._garble(out)
                writer.write(out)
                await writer.drain()
                assert next_line_at is not None
                next_line_at = max(next_line_at + self._stream_period_s(line), loop.time())
                continue
            if not data:
                return
            buf += data
            while True:
                ends = [i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0]
                if not ends:
                    break
                end = min(ends)
                command = bytes(buf[:end])
                consumed = end + 1
                if buf[end : end + 2] == b"\r\n":
                    consumed += 1
                del buf[:consumed]
                if not command.strip():
                    continue
                await self._handle(command, consumed, writer)

    async def _handle(self, command: bytes, request_len: int, writer: asyncio.StreamWriter) -> None:
        if self.faults.no_reply:
            return
        reply = self.respond(command.decode("ascii", errors="replace"))
        if not reply:
            return
        delay_s = self.timing.frame_s(request_len + len(reply)) + self.faults.delay_s
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        if self.faults.no_reply or self.faults.disconnect:
            return
        if self.faults.corrupt:
            reply = self._garble(reply)
        with contextlib.suppress(ConnectionError):
            writer.write(reply)
            await writer.drain()
