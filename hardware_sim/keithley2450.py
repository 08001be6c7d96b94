"""Simulated Keithley 2450 SourceMeter: a SCPI server on a raw TCP socket, like the LAN port 5025.

Reach it with pyvisa-py as `TCPIP0::127.0.0.1::PORT::SOCKET`, lines ending in "\\n" both ways.

SCPI rules implemented: mnemonics are case-insensitive in their short form (the capitals of the long form,
`SOUR` for `SOURce`) or their long form, nothing in between; `[optional]` nodes may be left out; a numeric
suffix `1` is accepted where the 2450 allows it (`SOUR1`, `SENS1`, `OUTP1`). Several commands may share a
line, separated by ';'. A command after ';' without a leading ':' continues from the previous command's branch
(IEEE 488.2 / SCPI: `:SOUR:CURR 1E-3;VLIM 2` is wrong, `:SOUR:CURR:VLIM 2;:SOUR:CURR 1E-3` is right); there
is no fall-back to the root. The replies to several queries on one line are joined by ';' into one line.

Command subset (devices.md §4), with the 2450's full syntax:
- `*RST`, `*CLS`, `*IDN?` (`KEITHLEY INSTRUMENTS,MODEL 2450,<serial>,<firmware>`), `*OPC?`, `*OPC`, `*WAI`.
- `:SOURce[1]:FUNCtion[:MODE] CURRent|VOLTage` (+query). `*RST` selects VOLT (the 2450's reset default).
- `:SOURce[1]:CURRent[:LEVel][:IMMediate][:AMPLitude] <A>` (+query), `:SOURce[1]:CURRent:RANGe <A>`,
  `:SOURce[1]:CURRent:RANGe:AUTO <b>`, `:SOURce[1]:CURRent:VLIMit[:LEVel] <V>` (+query),
  `:SOURce[1]:CURRent:VLIMit:TRIPped?`.
- `[:SENSe[1]]:FUNCtion[:ON] "VOLTage[:DC]"|"CURRent[:DC]"` (+query answers `"VOLT:DC"`); `*RST` selects
  current (the 2450's reset default), so a plain `:READ?` then returns the current.
- `[:SENSe[1]]:VOLTage[:DC]:RANGe[:UPPer] <V>`, `...:RANGe:AUTO <b>`, `...:NPLCycles <n>`, `...:RSENse <b>`
  (+queries; the same for CURRent).
- `:OUTPut[1]:CURRent:SMODe`, `:OUTPut[1]:VOLTage:SMODe`, `:OUTPut[1]:SMODe` (both) with HIMPedance,
  NORMal, ZERO, GUARd (+query; power-on / `*RST` default NORM). The output-off state is kept per source
  function and takes effect at once when the output is already off.
- `:OUTPut[1][:STATe] ON|OFF|1|0` (+query `1`/`0`).
- `:READ?` and `:READ? "defbuffer1", <elements>` with SOURce, READing, RELative (any order, up to 14).
- `:SYSTem:ERRor[:NEXT]?` (pops; `0,"No error"` when empty), `:SYSTem:ERRor:COUNt?`, `:SYSTem:CLEar`.

Numbers are answered as `%.6E` (`1.000000E-03`). `MINimum`, `MAXimum` and `DEFault` are accepted for numbers.

Error queue (real SCPI codes, message text as in the standard): -104 Data type error, -108 Parameter not
allowed, -109 Missing parameter, -113 Undefined header, -221 Settings conflict (RSENse change with the output
on), -222 Data out of range (|I| > 1.05 A, VLIM outside 0.02–210 V, a current beyond a fixed source range,
NPLC outside 0.01–10, ranges past the largest), -224 Illegal parameter value (an unknown choice),
-230 Data corrupt or stale, -350 Queue overflow (after 100 entries).

Choices where the manuals were not checked against a real unit (kept configurable or documented here):
- `:READ?` with the output off: the sim makes no measurement, queues -230 "Data corrupt or stale" and answers
  9.91E+37 (Keithley's NaN) for each requested element, so the client gets a line rather than a timeout.
  The 2400 family refuses such a read (+803 "Not permitted with OUTPUT off"); the 2450's behaviour was not
  confirmed. A driver must not read with the output off; it must treat 9.9E+37 and above as not a number.
- Overrange: a reading beyond 105 % of a fixed measure range answers `9.9E+37`. Autorange never overranges.
- The `nan` fault answers `9.9E+37` for every READing element.
- Relative time (REL) is experiment time in seconds since power-on (`start()`) or the last `*RST`.
- Sourcing voltage is not modelled: `:SOUR:VOLT` is not implemented, and a VOLT-function output is the
  2450's reset level, 0 V, i.e. the same 0 V source as the NORMAL output-off state.
- Changing `:SOUR:FUNC` with the output on first turns the output off (into the old function's off state).
- The 2450's power envelope (105 mA above 21 V) is not enforced.

Physics: output on, function CURR -> `model.set_source("current", current_a=I, voltage_limit_v=VLIM)`; output
off in HIMP or GUARD -> `"open"`; output off in NORMAL or ZERO -> `"short"` (a 0 V source across the cell).
Power-on (`start()`) applies the power-on output-off state, so a fresh simulated 2450 in NORM shorts the
cell until HIMP is set, as the real one does. Sign: the instrument's own (current out of HI is positive);
with HI on the Al working electrode that is anodic (stripping), the model's convention. Voltage is HI - LO.

A `:READ?` takes NPLC / line frequency seconds of experiment time; the reply waits `model.clock.wall_s()`
of it.

Faults (`faults`, supported POTENTIOSTAT_FAULTS): no_reply (lines swallowed, not executed), delay_s (extra
wall delay per reply), corrupt (garbage reply bytes, "\\n" kept), disconnect, compliance_trip
(`model.forced_compliance` follows it; TRIP? answers 1), scpi_error (that code is queued on every command),
nan (readings 9.9E+37).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from hardware_sim._tcp_server import DeviceTcpServer
from hardware_sim.faults import POTENTIOSTAT_FAULTS, Faults
from hardware_sim.model import Measurement, RigModel

SourceFunction = Literal["CURR", "VOLT"]
SenseFunction = Literal["VOLT", "CURR"]
OffMode = Literal["NORM", "HIMP", "ZERO", "GUAR"]

OVERRANGE = "9.9E+37"
NAN = "9.91E+37"

CURRENT_RANGES_A = (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
VOLTAGE_RANGES_V = (0.02, 0.2, 2.0, 20.0, 200.0)
MAX_CURRENT_A = 1.05
VLIM_MIN_V, VLIM_MAX_V = 0.02, 210.0
NPLC_MIN, NPLC_MAX = 0.01, 10.0
RANGE_OVER = 1.05  # a range reads up to 105 % of its nominal value
ERROR_QUEUE_LENGTH = 100
_OFF_MODES = {"HIMPedance": "HIMP", "NORMal": "NORM", "ZERO": "ZERO", "GUARd": "GUAR"}

SCPI_MESSAGES: dict[int, str] = {
    -100: "Command error",
    -102: "Syntax error",
    -104: "Data type error",
    -108: "Parameter not allowed",
    -109: "Missing parameter",
    -113: "Undefined header",
    -200: "Execution error",
    -221: "Settings conflict",
    -222: "Data out of range",
    -224: "Illegal parameter value",
    -230: "Data corrupt or stale",
    -350: "Queue overflow",
}


class ScpiError(Exception):
    """A command failed with a SCPI error code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


# ---------------------------------------------------------------------------------------------- mnemonics
@dataclass(frozen=True)
class _Node:
    long: str
    optional: bool
    suffix: bool  # accepts the numeric suffix 1

    @property
    def short(self) -> str:
        return "".join(ch for ch in self.long if ch.isupper() or ch.isdigit())

    def matches(self, token: str) -> bool:
        name = token.rstrip("0123456789")
        suffix = token[len(name) :]
        if suffix and not (self.suffix and suffix == "1"):
            return False
        up = name.upper()
        return up in (self.short, self.long.upper())


def _parse_pattern(pattern: str) -> tuple[_Node, ...]:
    """Turn `[:SENSe[1]]:VOLTage[:DC]:RANGe[:UPPer]` into nodes."""
    nodes: list[_Node] = []
    i = 0
    while i < len(pattern):
        optional = pattern[i] == "["
        if optional:
            i += 1
        assert pattern[i] == ":", pattern
        i += 1
        j = i
        while j < len(pattern) and (pattern[j].isalpha()):
            j += 1
        name = pattern[i:j]
        suffix = pattern[j : j + 3] == "[1]"
        if suffix:
            j += 3
        if optional:
            assert pattern[j] == "]", pattern
            j += 1
        nodes.append(_Node(name, optional, suffix))
        i = j
    return tuple(nodes)


def _match(nodes: tuple[_Node, ...], tokens: list[str]) -> bool:
    """Whether header tokens fit a pattern, trying optional nodes both ways."""
    if not nodes:
        return not tokens
    head, rest = nodes[0], nodes[1:]
    if tokens and head.matches(tokens[0]) and _match(rest, tokens[1:]):
        return True
    return head.optional and _match(rest, tokens)


def _choice(token: str, options: dict[str, str]) -> str | None:
    """Match character data against long forms (`HIMPedance`) -> the value the option maps to."""
    for long, value in options.items():
        if _Node(long, False, False).matches(token) and not token[-1:].isdigit():
            return value
    return None


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    quote = ""
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
            cur.append(ch)
        elif ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unquote(param: str) -> str:
    p = param.strip()
    if len(p) >= 2 and p[0] == p[-1] and p[0] in "\"'":
        return p[1:-1]
    return p


def _num(x: float) -> str:
    return f"{x:.6E}"


def _bool(params: list[str]) -> bool:
    p = _one(params).upper()
    if p in ("ON", "1"):
        return True
    if p in ("OFF", "0"):
        return False
    try:
        return round(float(p)) != 0
    except ValueError:
        raise ScpiError(-104) from None


def _one(params: list[str]) -> str:
    if not params or not params[0].strip():
        raise ScpiError(-109)
    if len(params) > 1:
        raise ScpiError(-108)
    return params[0].strip()


def _number(params: list[str], *, minimum: float, maximum: float, default: float) -> float:
    p = _one(params)
    special = _choice(p, {"MINimum": "MIN", "MAXimum": "MAX", "DEFault": "DEF"})
    if special == "MIN":
        return minimum
    if special == "MAX":
        return maximum
    if special == "DEF":
        return default
    try:
        value = float(p)
    except ValueError:
        raise ScpiError(-104) from None
    if value != value:
        raise ScpiError(-104)
    return value


def _range_for(value: float, ranges: tuple[float, ...]) -> float:
    """The smallest range that holds `value`; ScpiError(-222) past the largest."""
    for r in ranges:
        if abs(value) <= r * (1 + 1e-9):
            return r
    if abs(value) <= ranges[-1] * RANGE_OVER:
        return ranges[-1]
    raise ScpiError(-222)


# ---------------------------------------------------------------------------------------------- state
@dataclass
class SenseSettings:
    """Measure settings of one measure function."""

    range_value: float
    auto_range: bool = True
    nplc: float = 1.0
    remote_sense: bool = False


@dataclass
class Keithley2450State:
    """Everything `*RST` resets."""

    source_function: SourceFunction = "VOLT"
    current_a: float = 0.0
    current_range_a: float = 1e-6
    current_range_auto: bool = True
    voltage_limit_v: float = 21.0
    sense_function: SenseFunction = "CURR"
    sense: dict[str, SenseSettings] = field(
        default_factory=lambda: {
            "VOLT": SenseSettings(range_value=0.02),
            "CURR": SenseSettings(range_value=1e-4),
        }
    )
    output_on: bool = False
    off_mode: dict[str, OffMode] = field(default_factory=lambda: {"CURR": "NORM", "VOLT": "NORM"})


Handler = Callable[[bool, list[str]], Awaitable[str | None]]


class Keithley2450Sim:
    """A Keithley 2450 SourceMeter on a simulated LAN raw socket, driving the shared `RigModel`."""

    def __init__(
        self,
        model: RigModel,
        *,
        serial: str = "04512345",
        firmware: str = "1.7.12b",
        line_frequency_hz: float = 50.0,
        power_on_off_mode: OffMode = "NORM",
        seed: int = 0,
    ) -> None:
        if line_frequency_hz not in (50.0, 60.0):
            raise ValueError(f"line_frequency_hz must be 50 or 60, got {line_frequency_hz}")
        self.model = model
        self.serial = serial
        self.firmware = firmware
        self.line_frequency_hz = line_frequency_hz
        self.power_on_off_mode: OffMode = power_on_off_mode
        self.faults = Faults(supported=POTENTIOSTAT_FAULTS)
        self.state = Keithley2450State()
        self.errors: deque[tuple[int, str]] = deque()
        self.t0_s = model.clock.now()
        self._rng = random.Random(seed)
        self._forced_applied = False
        self._server = DeviceTcpServer(name="keithley2450", handler=self._serve, faults=self.faults)
        self._commands: list[tuple[tuple[_Node, ...], Handler]] = [
            (_parse_pattern(p), h)
            for p, h in (
                (":SOURce[1]:FUNCtion[:MODE]", self._source_function),
                (":SOURce[1]:CURRent[:LEVel][:IMMediate][:AMPLitude]", self._source_current),
                (":SOURce[1]:CURRent:RANGe", self._source_current_range),
                (":SOURce[1]:CURRent:RANGe:AUTO", self._source_current_range_auto),
                (":SOURce[1]:CURRent:VLIMit[:LEVel]", self._voltage_limit),
                (":SOURce[1]:CURRent:VLIMit:TRIPped", self._voltage_limit_tripped),
                ("[:SENSe[1]]:FUNCtion[:ON]", self._sense_function),
                ("[:SENSe[1]]:VOLTage[:DC]:RANGe[:UPPer]", self._sense_range("VOLT")),
                ("[:SENSe[1]]:VOLTage[:DC]:RANGe:AUTO", self._sense_range_auto("VOLT")),
                ("[:SENSe[1]]:VOLTage[:DC]:NPLCycles", self._sense_nplc("VOLT")),
                ("[:SENSe[1]]:VOLTage[:DC]:RSENse", self._sense_rsen("VOLT")),
                ("[:SENSe[1]]:CURRent[:DC]:RANGe[:UPPer]", self._sense_range("CURR")),
                ("[:SENSe[1]]:CURRent[:DC]:RANGe:AUTO", self._sense_range_auto("CURR")),
                ("[:SENSe[1]]:CURRent[:DC]:NPLCycles", self._sense_nplc("CURR")),
                ("[:SENSe[1]]:CURRent[:DC]:RSENse", self._sense_rsen("CURR")),
                (":OUTPut[1][:STATe]", self._output),
                (":OUTPut[1]:CURRent:SMODe", self._off_mode(("CURR",))),
                (":OUTPut[1]:VOLTage:SMODe", self._off_mode(("VOLT",))),
                (":OUTPut[1]:SMODe", self._off_mode(("CURR", "VOLT"))),
                (":READ", self._read),
                (":SYSTem:ERRor[:NEXT]", self._system_error),
                (":SYSTem:ERRor:COUNt", self._system_error_count),
                (":SYSTem:CLEar", self._system_clear),
            )
        ]

    # ------------------------------------------------------------------ lifecycle

    @property
    def connections_accepted(self) -> int:
        """How many connections were served since start."""
        return self._server.accepted

    async def start(self) -> int:
        """Power on: reset the settings, apply the output-off state, listen on 127.0.0.1; returns the port."""
        self._reset()
        self.state.off_mode = {"CURR": self.power_on_off_mode, "VOLT": self.power_on_off_mode}
        self._apply_source()
        return await self._server.start()

    async def close(self) -> None:
        """Stop listening and drop all connections."""
        await self._server.close()

    @property
    def port(self) -> int:
        """The bound TCP port (0 before `start()`)."""
        return self._server.port

    @property
    def resource(self) -> str:
        """The pyvisa-py resource string."""
        return f"TCPIP0::127.0.0.1::{self._server.port}::SOCKET"

    @property
    def url(self) -> str:
        """Alias of `resource`."""
        return self.resource

    # ------------------------------------------------------------------ errors
    def push_error(self, code: int) -> None:
        """Queue a SCPI error; past the queue length the last entry becomes -350 Queue overflow."""
        entry = (code, SCPI_MESSAGES.get(code, "Device-specific error" if code > 0 else "Error"))
        if len(self.errors) >= ERROR_QUEUE_LENGTH:
            self.errors[-1] = (-350, SCPI_MESSAGES[-350])
            return
        self.errors.append(entry)

    # ------------------------------------------------------------------ physics coupling
    def _reset(self) -> None:
        self.state = Keithley2450State()
        self.t0_s = self.model.clock.now()

    def _apply_source(self) -> None:
        """Tell the model what the terminals apply now."""
        s = self.state
        if s.output_on:
            if s.source_function == "CURR":
                self.model.set_source("current", current_a=s.current_a, voltage_limit_v=s.voltage_limit_v)
            else:
                self.model.set_source("short")
            return
        mode = s.off_mode[s.source_function]
        # NORMAL output-off is a 0 V source limited to 10 % of the present current range
        limit_a = 0.1 * max(s.current_range_a, 1e-6)
        self.model.set_source("short" if mode in ("NORM", "ZERO") else "open", current_limit_a=limit_a)

    def _sync_compliance_fault(self) -> None:
        if self.faults.compliance_trip != self._forced_applied:
            self._forced_applied = self.faults.compliance_trip
            self.model.forced_compliance = self.faults.compliance_trip

    # ------------------------------------------------------------------ command handlers
    async def _source_function(self, query: bool, params: list[str]) -> str | None:
        if query:
            return self.state.source_function
        func = _choice(_one(params), {"CURRent": "CURR", "VOLTage": "VOLT"})
        if func is None:
            raise ScpiError(-224)
        if func != self.state.source_function:
            if self.state.output_on:
                self.state.output_on = False
                self._apply_source()
            self.state.source_function = func  # type: ignore[assignment]
            self._apply_source()
        return None

    async def _source_current(self, query: bool, params: list[str]) -> str | None:
        s = self.state
        if query:
            return _num(s.current_a)
        value = _number(params, minimum=-MAX_CURRENT_A, maximum=MAX_CURRENT_A, default=0.0)
        if abs(value) > MAX_CURRENT_A:
            raise ScpiError(-222)
        if not s.current_range_auto and abs(value) > s.current_range_a * RANGE_OVER:
            raise ScpiError(-222)
        s.current_a = value
        if s.current_range_auto:
            s.current_range_a = _range_for(value, CURRENT_RANGES_A) if value else CURRENT_RANGES_A[0]
        if s.output_on:
            self._apply_source()
        return None

    async def _source_current_range(self, query: bool, params: list[str]) -> str | None:
        s = self.state
        if query:
            return _num(s.current_range_a)
        value = _number(params, minimum=CURRENT_RANGES_A[0], maximum=CURRENT_RANGES_A[-1], default=1e-6)
        s.current_range_a = _range_for(value, CURRENT_RANGES_A)
        s.current_range_auto = False
        return None

    async def _source_current_range_auto(self, query: bool, params: list[str]) -> str | None:
        s = self.state
        if query:
            return "1" if s.current_range_auto else "0"
        s.current_range_auto = _bool(params)
        if s.current_range_auto and s.current_a:
            s.current_range_a = _range_for(s.current_a, CURRENT_RANGES_A)
        return None

    async def _voltage_limit(self, query: bool, params: list[str]) -> str | None:
        s = self.state
        if query:
            return _num(s.voltage_limit_v)
        value = _number(params, minimum=VLIM_MIN_V, maximum=VLIM_MAX_V, default=21.0)
        if not VLIM_MIN_V <= value <= VLIM_MAX_V:
            raise ScpiError(-222)
        s.voltage_limit_v = value
        if s.output_on:
            self._apply_source()
        return None

    async def _voltage_limit_tripped(self, query: bool, params: list[str]) -> str | None:
        if not query:
            raise ScpiError(-113)
        if params and params[0].strip():
            raise ScpiError(-108)
        if not (self.state.output_on and self.state.source_function == "CURR"):
            return "0"
        return "1" if self.faults.compliance_trip or self.model.measure().in_compliance else "0"

    async def _sense_function(self, query: bool, params: list[str]) -> str | None:
        if query:
            return f'"{self.state.sense_function}:DC"'
        p = _unquote(_one(params))
        head, _, tail = p.partition(":")
        func = _choice(head, {"VOLTage": "VOLT", "CURRent": "CURR"})
        if func is None or (tail and _choice(tail, {"DC": "DC"}) is None):
            raise ScpiError(-224)
        self.state.sense_function = func  # type: ignore[assignment]
        return None

    def _sense_range(self, func: str) -> Handler:
        ranges = VOLTAGE_RANGES_V if func == "VOLT" else CURRENT_RANGES_A

        async def handler(query: bool, params: list[str]) -> str | None:
            sense = self.state.sense[func]
            if query:
                return _num(sense.range_value)
            value = _number(params, minimum=ranges[0], maximum=ranges[-1], default=ranges[-1])
            sense.range_value = _range_for(value, ranges)
            sense.auto_range = False
            return None

        return handler

    def _sense_range_auto(self, func: str) -> Handler:
        async def handler(query: bool, params: list[str]) -> str | None:
            sense = self.state.sense[func]
            if query:
                return "1" if sense.auto_range else "0"
            sense.auto_range = _bool(params)
            return None

        return handler

    def _sense_nplc(self, func: str) -> Handler:
        async def handler(query: bool, params: list[str]) -> str | None:
            sense = self.state.sense[func]
            if query:
                return _num(sense.nplc)
            value = _number(params, minimum=NPLC_MIN, maximum=NPLC_MAX, default=1.0)
            if not NPLC_MIN <= value <= NPLC_MAX:
                raise ScpiError(-222)
            sense.nplc = value
            return None

        return handler

    def _sense_rsen(self, func: str) -> Handler:
        async def handler(query: bool, params: list[str]) -> str | None:
            sense = self.state.sense[func]
            if query:
                return "1" if sense.remote_sense else "0"
            value = _bool(params)
            if self.state.output_on and value != sense.remote_sense:
                raise ScpiError(-221)
            sense.remote_sense = value
            return None

        return handler

    async def _output(self, query: bool, params: list[str]) -> str | None:
        if query:
            return "1" if self.state.output_on else "0"
        self.state.output_on = _bool(params)
        self._apply_source()
        return None

    def _off_mode(self, funcs: tuple[str, ...]) -> Handler:
        async def handler(query: bool, params: list[str]) -> str | None:
            if query:
                return self.state.off_mode[funcs[0]]
            mode = _choice(_one(params), _OFF_MODES)
            if mode is None:
                raise ScpiError(-224)
            for f in funcs:
                self.state.off_mode[f] = mode  # type: ignore[assignment]
            if not self.state.output_on:
                self._apply_source()
            return None

        return handler

    async def _read(self, query: bool, params: list[str]) -> str | None:
        if not query:
            raise ScpiError(-113)
        elements = ["READ"]
        if params and params[0].strip():
            buffer = _unquote(params[0]).lower()
            if buffer not in ("defbuffer1", "defbuffer2"):
                raise ScpiError(-224)
            if len(params) > 1:
                if len(params) > 15:
                    raise ScpiError(-108)
                elements = []
                for p in params[1:]:
                    e = _choice(p.strip(), {"SOURce": "SOUR", "READing": "READ", "RELative": "REL"})
                    if e is None:
                        raise ScpiError(-224)
                    elements.append(e)
        s = self.state
        sense = s.sense[s.sense_function]
        await asyncio.sleep(self.model.clock.wall_s(sense.nplc / self.line_frequency_hz))
        if not s.output_on:
            self.push_error(-230)
            return ",".join(NAN for _ in elements)
        meas = self.model.measure()
        rel_s = self.model.clock.now() - self.t0_s
        values = {"SOUR": self._source_readback(meas), "READ": self._reading(meas), "REL": _num(rel_s)}
        return ",".join(values[e] for e in elements)

    def _source_readback(self, meas: Measurement) -> str:
        if self.state.source_function == "CURR":
            return _num(meas.current_a)
        return _num(meas.voltage_v)

    def _reading(self, meas: Measurement) -> str:
        if self.faults.nan:
            return OVERRANGE
        s = self.state
        sense = s.sense[s.sense_function]
        value = meas.voltage_v if s.sense_function == "VOLT" else meas.current_a
        ranges = VOLTAGE_RANGES_V if s.sense_function == "VOLT" else CURRENT_RANGES_A
        limit = (ranges[-1] if sense.auto_range else sense.range_value) * RANGE_OVER
        if abs(value) > limit:
            return OVERRANGE
        if sense.auto_range:
            sense.range_value = _range_for(value, ranges) if value else ranges[0]
        return _num(value)

    async def _system_error(self, query: bool, params: list[str]) -> str | None:
        if not query:
            raise ScpiError(-113)
        if not self.errors:
            return '0,"No error"'
        code, message = self.errors.popleft()
        return f'{code},"{message}"'

    async def _system_error_count(self, query: bool, params: list[str]) -> str | None:
        if not query:
            raise ScpiError(-113)
        return str(len(self.errors))

    async def _system_clear(self, query: bool, params: list[str]) -> str | None:
        if query:
            raise ScpiError(-113)
        self.errors.clear()
        return None

    async def _common(self, header: str, query: bool) -> str | None:
        h = header.upper()
        if h == "*IDN" and query:
            return f"KEITHLEY INSTRUMENTS,MODEL 2450,{self.serial},{self.firmware}"
        if h == "*RST" and not query:
            self._reset()
            self._apply_source()
            return None
        if h == "*CLS" and not query:
            self.errors.clear()
            return None
        if h == "*OPC":
            return "1" if query else None
        if h == "*WAI" and not query:
            return None
        raise ScpiError(-113)

    # ------------------------------------------------------------------ parser
    def _find(self, tokens: list[str]) -> Handler | None:
        for nodes, handler in self._commands:
            if _match(nodes, tokens):
                return handler
        return None

    async def execute(self, line: str) -> list[str]:
        """Run one program message (commands separated by ';'); returns the query replies in order."""
        replies: list[str] = []
        prefix: list[str] = []
        for unit in _split_outside_quotes(line, ";"):
            unit = unit.strip()
            if not unit:
                continue
            self._sync_compliance_fault()
            if self.faults.scpi_error:
                self.push_error(self.faults.scpi_error)
            header, rest = [*unit.split(maxsplit=1), ""][:2]
            query = header.endswith("?")
            if query:
                header = header[:-1]
            params = _split_outside_quotes(rest, ",") if rest.strip() else []
            try:
                if header.startswith("*"):
                    if params:
                        raise ScpiError(-108)
                    reply = await self._common(header, query)
                else:
                    absolute = header.startswith(":")
                    tokens = header.lstrip(":").split(":")
                    if not all(tokens):
                        raise ScpiError(-113)
                    if not absolute:
                        tokens = prefix + tokens
                    handler = self._find(tokens)
                    if handler is None:
                        raise ScpiError(-113)
                    prefix = tokens[:-1]
                    reply = await handler(query, params)
            except ScpiError as exc:
                self.push_error(exc.code)
                continue
            if reply is not None:
                replies.append(reply)
        return replies

    def _garble(self, reply: bytes) -> bytes:
        body = reply[:-1] if reply.endswith(b"\n") else reply
        return bytes(self._rng.randrange(0x80, 0x100) for _ in range(max(len(body), 1))) + b"\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            raw = await reader.readline()
            if not raw:
                return
            if self.faults.no_reply:
                continue
            replies = await self.execute(raw.decode("ascii", errors="replace").strip())
            if not replies:
                continue
            reply = (";".join(replies) + "\n").encode("ascii")
            if self.faults.delay_s > 0:
                await asyncio.sleep(self.faults.delay_s)
            if self.faults.no_reply or self.faults.disconnect:
                continue
            if self.faults.corrupt:
                reply = self._garble(reply)
            with contextlib.suppress(ConnectionError):
                writer.write(reply)
                await writer.drain()
