"""Keithley 2450 SourceMeter as a galvanostat, SCPI over VISA: `Keithley2450` implements `Potentiostat`.

Current sign convention (as in drivers/interfaces.py): positive current is anodic at the working electrode
(stripping Na from Al), negative current is cathodic (plating Na onto Al). The working electrode goes on the
2450's FORCE HI (and SENSE HI for 4-wire), the counter electrode on FORCE LO, so the instrument's own sign
(current out of HI is positive) is the convention here and `:SOUR:CURR <A>` is sent unchanged. Voltage is
working minus counter electrode.

Transport: pyvisa with the pyvisa-py backend ("@py"), e.g. `TCPIP0::192.168.1.20::5025::SOCKET` (raw LAN
socket; the instrument must be in the SCPI command set, not TSP). Lines end with "\\n" both ways. Every pyvisa
call runs in one dedicated worker thread (pyvisa is synchronous and not thread-safe), and each multi-command
operation holds an asyncio lock, so operations never interleave. The resource timeout is set explicitly in ms.

Safety:
- `verify_safe(voltage_limit_v)` clears the status (`*CLS`), sets the output-off state to HIGH-Z
  (`:OUTP:CURR:SMOD HIMP`; the NORMAL off state is a 0 V source that shorts the cell) and the voltage
  compliance, reads them back, and raises `UnsafeSetting` unless both are right and the error queue is empty.
- `output(True)` is refused until `verify_safe()` and `configure_galvanostatic()` have passed on this
  connection; both are forgotten on reconnect, since the instrument may have been power-cycled meanwhile.
- After every configuration write the error queue is drained; an entry raises `DeviceExceptionReply` with the
  SCPI code, naming the command just written.
- A reading past range (9.9E+37 or beyond, or non-finite) is overrange with no voltage; `voltage_v()`
  refuses it.

Cost of a reading: `read()` is two round trips, `:READ? "defbuffer1", SOUR, READ, REL` and then
`:SOUR:CURR:VLIM:TRIP?` for the compliance flag. The buffer's SOURSTATUS element carries a limit bit and could
save the second query, but its bit layout has not been checked against a real unit here.

pyvisa-py quirks handled here:
- Opening a SOCKET resource to a port with no listener "succeeds"; the first write then raises a raw
  `ConnectionRefusedError`. `connect()` checks the socket's error state after opening.
- A peer that closes the connection makes reads spin until the timeout (VI_ERROR_TMO), not a connection
  error; after such a timeout the socket is checked for end-of-file, which becomes `DeviceDisconnected`.
  Writes to a closed connection raise a raw `BrokenPipeError`/`ConnectionResetError`, mapped the same way.
  A lost connection is reopened by the next call.
- After a timeout, a late reply may still arrive; the next operation first clears the input (`clear()`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import math
import re
import socket
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import pyvisa
import pyvisa.constants
import pyvisa.errors

from drivers.clock import Clock, MonotonicClock
from drivers.errors import (
    DeviceDisconnected,
    DeviceError,
    DeviceExceptionReply,
    DeviceProtocolError,
    DeviceTimeout,
    UnsafeSetting,
)
from drivers.interfaces import DeviceIdentity, GalvanostaticConfig, PotentiostatReading, PotentiostatSafety

__all__ = ["OVERRANGE_V", "Keithley2450", "ScpiError", "parse_read_reply", "parse_system_error"]

_T = TypeVar("_T")

#: The 2450 reports a reading past range as 9.9E+37; this magnitude and above is overrange.
OVERRANGE_V = 9.9e37

READ_QUERY = ':READ? "defbuffer1", SOUR, READ, REL'
TRIP_QUERY = ":SOUR:CURR:VLIM:TRIP?"
ERROR_QUERY = ":SYST:ERR?"

_ERROR_RE = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')
# How long past the resource timeout a worker job may run before the driver gives up on the worker thread.
_GUARD_GRACE_S = 2.0
_DISCONNECT_CODES = {
    pyvisa.constants.StatusCode.error_connection_lost,
    pyvisa.constants.StatusCode.error_invalid_object,
    pyvisa.constants.StatusCode.error_resource_not_found,
    pyvisa.constants.StatusCode.error_closing_failed,
}


class ScpiError(NamedTuple):
    """One error-queue entry; code 0 means no error."""

    code: int
    message: str

    def __str__(self) -> str:
        """Format like the instrument does."""
        return f'{self.code},"{self.message}"'


def parse_system_error(reply: str, *, device: str = "keithley2450") -> ScpiError:
    """Parse a `:SYST:ERR?` reply such as `-113,"Undefined header"`."""
    match = _ERROR_RE.match(reply)
    if match is None:
        raise DeviceProtocolError(device, ERROR_QUERY, "not '<code>,\"<message>\"'", reply)
    return ScpiError(int(match.group(1)), match.group(2))


def _fmt(value: float) -> str:
    """A number as sent in SCPI: shortest form with up to 12 significant digits."""
    return f"{value:.12g}"


def _finite(name: str, value: float) -> float:
    """Refuse NaN and infinities in settings."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    return float(value)


def _parse_float(device: str, command: str, text: str, reply: str) -> float:
    """Parse one SCPI number; a malformed field is a protocol error."""
    try:
        return float(text)
    except ValueError:
        raise DeviceProtocolError(device, command, f"{text!r} is not a number", reply) from None


def _overrange(value: float) -> bool:
    """True for the overrange code and anything non-finite."""
    return not math.isfinite(value) or abs(value) >= OVERRANGE_V


def parse_read_reply(
    reply: str, *, t_s: float, in_compliance: bool, device: str = "keithley2450"
) -> PotentiostatReading:
    """Parse `<source A>,<reading V>,<relative s>` into a reading; overrange voltage has no value."""
    fields = reply.strip().split(",")
    if len(fields) != 3:
        detail = f"expected 3 comma-separated values, got {len(fields)}"
        raise DeviceProtocolError(device, READ_QUERY, detail, reply)
    current_a = _parse_float(device, READ_QUERY, fields[0], reply)
    voltage_v = _parse_float(device, READ_QUERY, fields[1], reply)
    rel_s = _parse_float(device, READ_QUERY, fields[2], reply)
    if _overrange(current_a):
        raise DeviceProtocolError(device, READ_QUERY, "the source current is not a finite number", reply)
    overrange = _overrange(voltage_v)
    return PotentiostatReading(
        t_s=t_s,
        instrument_time_s=rel_s if math.isfinite(rel_s) else None,
        value_v=None if overrange else voltage_v,
        current_a=current_a,
        in_compliance=in_compliance,
        overrange=overrange,
        raw=reply.strip(),
    )


class Keithley2450:
    """Keithley 2450 SourceMeter driven as a galvanostat over SCPI (pyvisa-py)."""

    def __init__(
        self,
        *,
        name: str,
        resource: str,
        timeout_s: float = 2.0,
        open_timeout_s: float = 2.0,
        clock: Clock | None = None,
        visa_library: str = "@py",
        expected_model: str | None = "MODEL 2450",
        voltage_limit_tolerance_v: float = 1e-3,
        max_error_entries: int = 64,
    ) -> None:
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(f"{name}: timeout_s must be a positive number of seconds, not {timeout_s!r}")
        if not (open_timeout_s > 0 and math.isfinite(open_timeout_s)):
            raise ValueError(f"{name}: open_timeout_s must be positive seconds, not {open_timeout_s!r}")
        self.name = name
        self.resource_name = resource
        self.timeout_s = timeout_s
        self.open_timeout_s = open_timeout_s
        self.visa_library = visa_library
        self.expected_model = expected_model
        self.voltage_limit_tolerance_v = voltage_limit_tolerance_v
        self.max_error_entries = max_error_entries
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._lock = asyncio.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._rm: Any = None
        self._res: Any = None
        self._wanted_open = False
        self._needs_clear = False
        self._safe_verified = False
        self._configured = False

    # ------------------------------------------------------------------------------------------- lifecycle

    async def connect(self) -> None:
        """Open the VISA resource (idempotent); raises `DeviceDisconnected` when it cannot be reached."""
        async with self._lock:
            self._wanted_open = True
            await self._ensure_open()

    async def close(self) -> None:
        """Close the resource and the resource manager, and stop the worker thread (idempotent)."""
        async with self._lock:
            self._wanted_open = False
            executor, self._executor = self._executor, None
            if executor is None:
                return
            try:
                await asyncio.wrap_future(executor.submit(self._close_sync))
            finally:
                # The queue is empty and the job above has finished, so this returns at once.
                executor.shutdown(wait=True)

    # -------------------------------------------------------------------------------------- Potentiostat

    async def identify(self) -> DeviceIdentity:
        """Ask `*IDN?` and parse `KEITHLEY INSTRUMENTS,MODEL 2450,<serial>,<firmware>`."""
        async with self._lock:
            reply = await self._query("*IDN?")
        fields = [f.strip() for f in reply.strip().split(",")]
        if len(fields) != 4 or not all(fields[:2]):
            detail = "expected '<vendor>,<model>,<serial>,<firmware>'"
            raise DeviceProtocolError(self.name, "*IDN?", detail, reply)
        vendor, model, serial_no, firmware = fields
        if self.expected_model is not None and self.expected_model.upper() not in model.upper():
            raise DeviceProtocolError(self.name, "*IDN?", f"not a {self.expected_model}", reply)
        return DeviceIdentity(device=self.name, vendor=vendor, model=model, serial=serial_no, firmware=firmware)

    async def configure_galvanostatic(self, config: GalvanostaticConfig) -> None:
        """Source current, measure voltage; output state unchanged. RSEN changes only with the output off."""
        current_a = _finite("current_a", config.current_a)
        limit_v = _finite("voltage_limit_v", config.voltage_limit_v)
        if limit_v <= 0:
            raise ValueError(f"voltage_limit_v must be positive, not {limit_v!r}")
        nplc = _finite("nplc", config.nplc)
        if not 0.01 <= nplc <= 10:
            raise ValueError(f"nplc must be within 0.01..10, not {nplc!r}")
        i_range, v_range = config.current_range_a, config.voltage_range_v
        for label, value in (("current_range_a", i_range), ("voltage_range_v", v_range)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{label} must be a positive number or None (auto), not {value!r}")
        rsen = "ON" if config.four_wire else "OFF"
        commands = [
            ":SOUR:FUNC CURR",
            ":SOUR:CURR:RANG:AUTO 1" if i_range is None else f":SOUR:CURR:RANG {_fmt(i_range)}",
            f":SOUR:CURR:VLIM {_fmt(limit_v)}",
            f":SOUR:CURR {_fmt(current_a)}",
            ':SENS:FUNC "VOLT"',
            ":SENS:VOLT:RANG:AUTO 1" if v_range is None else f":SENS:VOLT:RANG {_fmt(v_range)}",
            f":SENS:VOLT:NPLC {_fmt(nplc)}",
        ]
        async with self._lock:
            output_on = _parse_bool(self.name, ":OUTP?", await self._query(":OUTP?"))
            if output_on:
                # Sensing and source function must not change under a live cell: check, and skip those writes.
                reply = await self._query(":SENS:VOLT:RSEN?")
                if _parse_bool(self.name, ":SENS:VOLT:RSEN?", reply) != config.four_wire:
                    detail = "sense mode can only change with the output off"
                    raise UnsafeSetting(self.name, f":SENS:VOLT:RSEN {rsen}", detail, reply)
                func = _unquote(await self._query(":SOUR:FUNC?"))
                if func != "CURR":
                    detail = "source function can only change with the output off"
                    raise UnsafeSetting(self.name, ":SOUR:FUNC CURR", detail, func)
                commands.remove(":SOUR:FUNC CURR")
            else:
                commands.append(f":SENS:VOLT:RSEN {rsen}")
            self._configured = False
            for command in commands:
                await self._write_checked(command)
            self._configured = True

    async def output(self, on: bool) -> None:
        """Switch the output; on is refused until `verify_safe()` and `configure_galvanostatic()` passed."""
        command = ":OUTP ON" if on else ":OUTP OFF"
        async with self._lock:
            if on and not self._safe_verified:
                raise UnsafeSetting(self.name, command, "verify_safe() has not passed on this connection")
            if on and not self._configured:
                detail = "configure_galvanostatic() has not run on this connection"
                raise UnsafeSetting(self.name, command, detail)
            await self._write_checked(command)

    async def set_current_a(self, current_a: float) -> None:
        """Change the source current (positive anodic/stripping, negative plating), output on or off."""
        value = _finite("current_a", current_a)
        async with self._lock:
            await self._write_checked(f":SOUR:CURR {_fmt(value)}")

    async def read(self) -> PotentiostatReading:
        """One reading plus the compliance flag (two queries); overrange voltage has no value."""
        async with self._lock:
            reply = await self._query(READ_QUERY)
            t_s = self._clock.now()
            trip = _parse_bool(self.name, TRIP_QUERY, await self._query(TRIP_QUERY))
        return parse_read_reply(reply, t_s=t_s, in_compliance=trip, device=self.name)

    async def safety_settings(self) -> PotentiostatSafety:
        """Read output-off mode, compliance, output state, source function, and drain the error queue."""
        async with self._lock:
            return await self._safety_settings()

    async def verify_safe(self, voltage_limit_v: float) -> PotentiostatSafety:
        """Set HIGH-Z output-off and the compliance and read them back; `UnsafeSetting` names a bad one."""
        limit_v = _finite("voltage_limit_v", voltage_limit_v)
        if limit_v <= 0:
            raise ValueError(f"voltage_limit_v must be positive, not {limit_v!r}")
        async with self._lock:
            self._safe_verified = False
            await self._write("*CLS")
            await self._write(":OUTP:CURR:SMOD HIMP")
            await self._write(f":SOUR:CURR:VLIM {_fmt(limit_v)}")
            safety = await self._safety_settings()
            errors = "; ".join(safety.errors)
            if safety.output_off_mode != "HIMP":
                detail = "output-off mode must be HIMP (NORMAL turns off into a 0 V source: shorts the cell)"
                if errors:
                    detail += f" (error queue: {errors})"
                raise UnsafeSetting(self.name, ":OUTP:CURR:SMOD", detail, safety.output_off_mode)
            if abs(safety.voltage_limit_v - limit_v) > self.voltage_limit_tolerance_v:
                detail = f"voltage compliance reads back {safety.voltage_limit_v:g} V, not {limit_v:g} V"
                raise UnsafeSetting(self.name, ":SOUR:CURR:VLIM", detail, _fmt(safety.voltage_limit_v))
            if safety.errors:
                detail = "error queue not empty after the safety settings"
                raise UnsafeSetting(self.name, ERROR_QUERY, detail, errors)
            self._safe_verified = True
            return safety

    async def source_current_a(self) -> float:
        """The programmed source level (`:SOUR:CURR?`), output on or off."""
        async with self._lock:
            reply = await self._query(":SOUR:CURR?")
        return _parse_float(self.name, ":SOUR:CURR?", reply.strip(), reply)

    async def switch_off(self) -> tuple[tuple[str, ...], tuple[float, float], PotentiostatSafety]:
        """Output off into HIGH-Z for a rig found unattended (`rig safe`); no verify_safe() needed first.

        The error history is read first and returned, never cleared unread; the output-off mode is set to HIMP
        before the output goes off (NORMAL would turn off into a 0 V source and short the cell); then the output
        state and the off mode are read back. Returns (the errors found, the clock's times between which the output
        went off: `:OUTP OFF` sent, and the instrument's answer to the query after it; the settings read back)."""
        async with self._lock:
            earlier = tuple(str(e) for e in await self._drain_errors())
            await self._write_checked(":OUTP:CURR:SMOD HIMP")
            sent = self._clock.now()
            await self._write_checked(":OUTP OFF")
            return earlier, (sent, self._clock.now()), await self._safety_settings()

    # --------------------------------------------------------------------------------- locked helpers

    async def _safety_settings(self) -> PotentiostatSafety:
        """Read the safety-relevant settings; the lock is held."""
        smod = _unquote(await self._query(":OUTP:CURR:SMOD?")).upper()
        vlim_reply = await self._query(":SOUR:CURR:VLIM?")
        vlim = _parse_float(self.name, ":SOUR:CURR:VLIM?", vlim_reply.strip(), vlim_reply)
        if not math.isfinite(vlim):
            detail = "compliance is not a finite number"
            raise DeviceProtocolError(self.name, ":SOUR:CURR:VLIM?", detail, vlim_reply)
        output_on = _parse_bool(self.name, ":OUTP?", await self._query(":OUTP?"))
        func = _unquote(await self._query(":SOUR:FUNC?")).upper()
        errors = await self._drain_errors()
        return PotentiostatSafety(
            output_off_mode=smod,
            voltage_limit_v=vlim,
            output_on=output_on,
            source_function=func,
            errors=tuple(str(e) for e in errors),
        )

    async def _drain_errors(self) -> list[ScpiError]:
        """Read `:SYST:ERR?` until code 0; returns the entries before it."""
        entries: list[ScpiError] = []
        for _ in range(self.max_error_entries):
            entry = parse_system_error(await self._query(ERROR_QUERY), device=self.name)
            if entry.code == 0:
                return entries
            entries.append(entry)
        shown = "; ".join(str(e) for e in entries[:5])
        raise DeviceProtocolError(
            self.name, ERROR_QUERY, f"error queue not empty after {self.max_error_entries} reads", shown
        )

    async def _write_checked(self, command: str) -> None:
        """Write a configuration command and drain the error queue; an entry raises `DeviceExceptionReply`."""
        await self._write(command)
        errors = await self._drain_errors()
        if errors:
            first = errors[0]
            detail = f"instrument reported error {first.code} ({first.message})"
            if len(errors) > 1:
                detail += f" and {len(errors) - 1} more"
            raise DeviceExceptionReply(self.name, command, detail, "; ".join(str(e) for e in errors), code=first.code)

    async def _write(self, command: str) -> None:
        """Write one command; the lock is held."""
        await self._call(self._write_sync, command)

    async def _query(self, command: str) -> str:
        """Write one query and read its reply line; the lock is held."""
        return await self._call(self._query_sync, command)

    # ---------------------------------------------------------------------------------- worker plumbing

    async def _ensure_open(self) -> None:
        """Open the resource if needed; the lock is held."""
        if not self._wanted_open:
            raise DeviceDisconnected(self.name, "open", "not connected; call connect() first")
        if self._res is not None:
            return
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"visa-{self.name}"
            )
        self._safe_verified = False
        self._configured = False
        await self._run(self._open_sync, command=f"open {self.resource_name}", budget_s=self.open_timeout_s)

    async def _call(self, fn: Callable[[str], _T], command: str) -> _T:
        """Run one pyvisa operation in the worker thread, reopening a lost connection first."""
        await self._ensure_open()
        return await self._run(fn, command, command=command, budget_s=self.timeout_s)

    async def _run(self, fn: Callable[..., _T], /, *args: Any, command: str, budget_s: float) -> _T:
        """Submit to the worker thread; guard against a worker that never returns."""
        executor = self._executor
        if executor is None:
            raise DeviceDisconnected(self.name, command, "not connected")
        future = executor.submit(fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), budget_s + _GUARD_GRACE_S)
        except TimeoutError:
            if future.done():
                raise
            # The worker is stuck inside pyvisa: abandon it and the resource; the next call reconnects.
            res, rm = self._res, self._rm
            self._res = self._rm = None
            self._executor = None
            executor.submit(_close_quietly, res, rm)
            executor.shutdown(wait=False)
            raise DeviceTimeout(
                self.name, command, f"the VISA thread did not return within {budget_s + _GUARD_GRACE_S:g} s"
            ) from None

    # ------------------------------------------------------------------------------ worker-thread jobs

    def _open_sync(self) -> None:
        """Create the resource manager and open the resource with explicit terminations and timeouts."""
        timeout_ms = max(1, round(self.timeout_s * 1000))
        open_timeout_ms = max(1, round(self.open_timeout_s * 1000))
        rm: Any = None
        try:
            rm = pyvisa.ResourceManager(self.visa_library)
            res = rm.open_resource(
                self.resource_name,
                open_timeout=open_timeout_ms,
                read_termination="\n",
                write_termination="\n",
                timeout=timeout_ms,
            )
            res.timeout = timeout_ms
            _check_socket_connected(rm, res)
        except Exception as exc:  # pyvisa errors, OSError, and the bare Exception pyvisa-py raises on connect
            _close_quietly(None, rm)
            raise DeviceDisconnected(self.name, f"open {self.resource_name}", str(exc)) from exc
        self._rm = rm
        self._res = res
        self._needs_clear = False

    def _close_sync(self) -> None:
        """Close the resource and the resource manager."""
        res, rm = self._res, self._rm
        self._res = self._rm = None
        _close_quietly(res, rm)

    def _prepare_sync(self, command: str) -> Any:
        """The open resource, cleared of late replies after an earlier timeout."""
        res = self._res
        if res is None:
            raise DeviceDisconnected(self.name, command, "the connection was lost")
        if self._needs_clear:
            self._guarded(res.clear, command)
            self._needs_clear = False
        return res

    def _write_sync(self, command: str) -> None:
        """Worker job: write one command."""
        res = self._prepare_sync(command)
        self._guarded(lambda: res.write(command), command)

    def _query_sync(self, command: str) -> str:
        """Worker job: write one query and read the reply line."""
        res = self._prepare_sync(command)
        self._guarded(lambda: res.write(command), command)
        reply: str = self._guarded(res.read, command)
        return reply

    def _guarded(self, fn: Callable[[], _T], command: str) -> _T:
        """Run a pyvisa call, translating its failures; drop the resource when the link is gone."""
        try:
            return fn()
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                if _peer_closed(self._rm, self._res):
                    self._close_sync()
                    detail = "the instrument closed the connection"
                    raise DeviceDisconnected(self.name, command, detail) from exc
                self._needs_clear = True
                raise DeviceTimeout(self.name, command, f"no reply within {self.timeout_s:g} s") from exc
            if exc.error_code in _DISCONNECT_CODES:
                self._close_sync()
                raise DeviceDisconnected(self.name, command, str(exc)) from exc
            raise DeviceError(self.name, command, str(exc)) from exc
        except (OSError, pyvisa.errors.InvalidSession) as exc:
            self._close_sync()
            raise DeviceDisconnected(self.name, command, f"connection lost: {exc}") from exc
        except UnicodeDecodeError as exc:
            self._needs_clear = True
            raise DeviceProtocolError(self.name, command, "reply is not ASCII", exc.object) from exc


def _raw_socket(rm: Any, res: Any) -> socket.socket | None:
    """The TCP socket under a pyvisa-py SOCKET session, or None for any other kind of resource."""
    try:
        session = rm.visalib.sessions.get(res.session)
    except Exception:  # another backend, or a closed session: nothing to inspect
        return None
    sock = getattr(session, "interface", None)
    return sock if isinstance(sock, socket.socket) else None


def _peer_closed(rm: Any, res: Any) -> bool:
    """True when a pyvisa-py raw socket has reached end-of-file (the peer closed the connection)."""
    sock = _raw_socket(rm, res)
    if sock is None:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _check_socket_connected(rm: Any, res: Any) -> None:
    """Raise `ConnectionError` when a pyvisa-py SOCKET session did not actually connect."""
    sock = _raw_socket(rm, res)
    if sock is None:
        return  # not a pyvisa-py raw socket: nothing to check
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise ConnectionError(err, f"socket connect failed: {errno.errorcode.get(err, err)}")
    sock.getpeername()  # raises OSError (ENOTCONN) when the connection never completed


def _close_quietly(res: Any, rm: Any) -> None:
    """Close a resource and a resource manager, ignoring errors from a link that is already gone."""
    if res is not None:
        with contextlib.suppress(Exception):
            res.close()
    if rm is not None:
        with contextlib.suppress(Exception):
            rm.close()


def _unquote(reply: str) -> str:
    """Strip whitespace and surrounding double quotes."""
    return reply.strip().strip('"')


def _parse_bool(device: str, command: str, reply: str) -> bool:
    """Parse a SCPI boolean reply (1/0/ON/OFF)."""
    text = reply.strip().upper()
    if text in ("1", "ON"):
        return True
    if text in ("0", "OFF"):
        return False
    raise DeviceProtocolError(device, command, "expected 0 or 1", reply)
