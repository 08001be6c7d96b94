"""Async ASCII line transport over pyserial: one worker thread, one lock, explicit timeouts, reconnect.

The port is opened with `serial.serial_for_url`, so a device path ("/dev/ttyUSB0", "COM3") and a TCP bridge
("socket://127.0.0.1:PORT", used by the simulator and the tests) both work.

Threading: every blocking pyserial call runs in one dedicated worker thread per line, so calls never run
concurrently on a port and the event loop never blocks. A request/reply exchange (discard stale input, write,
read the reply) is one job in that thread and runs under the line's asyncio lock, so it cannot interleave with
another exchange. If the awaiting task is cancelled, the job still finishes in the worker; the next job queues
behind it.

Line synchronisation: the line remembers whether the last byte it received ended a line. After discarding
stale input, the next byte either starts a new line (the discarded data ended with the terminator) or
continues a line whose head was thrown away. `query_line` can then drop that partial first line instead of
parsing its tail ("2.3 N" out of "12.3 N") as a value. Right after opening the position is unknown, because
pyserial discards pending input on open without showing it.

Reconnect: a pyserial or OS error during I/O closes the port and raises `DeviceDisconnected`. The next call
reopens it. When a USB serial number is configured, the port is found again by that number (the path of a
replugged USB adapter can change), falling back to the configured URL.

I/O deadlines are wire time, measured with `MonotonicClock` (drivers/clock.py): a device answers in real time
even when the experiment clock runs accelerated. Timestamps of readings are the caller's business.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

import serial
import serial.tools.list_ports

from drivers.clock import Clock, MonotonicClock
from drivers.errors import DeviceDisconnected, DeviceProtocolError, DeviceTimeout

__all__ = ["PortFinder", "SerialLine", "find_port_by_usb_serial"]

_T = TypeVar("_T")

PortFinder = Callable[[str], str | None]
"""Maps a USB serial number to a port path or URL, or None when no such port is present."""

# How long past its own timeout a worker job may run before the line gives up on the worker thread.
_GUARD_GRACE_S = 2.0
# Bytes drained per discard before giving up: a runaway stream must not keep the worker busy forever.
_MAX_DISCARD_BYTES = 1 << 20


def find_port_by_usb_serial(serial_number: str) -> str | None:
    """Return the device path of the USB serial port with this USB serial number, or None."""
    for info in serial.tools.list_ports.comports():
        if info.serial_number and info.serial_number == serial_number:
            return str(info.device)
    return None


class SerialLine:
    """One ASCII line-oriented serial port (or socket:// bridge) shared by async callers."""

    def __init__(
        self,
        *,
        device: str,
        url: str | None = None,
        usb_serial_number: str | None = None,
        baudrate: int = 115200,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        eol: bytes = b"\n",
        max_line_bytes: int = 256,
        exclusive: bool = True,
        port_finder: PortFinder = find_port_by_usb_serial,
        io_clock: Clock | None = None,
    ) -> None:
        if url is None and usb_serial_number is None:
            raise ValueError(f"{device}: give a port url/path, a USB serial number, or both")
        if not eol:
            raise ValueError(f"{device}: eol must not be empty")
        if max_line_bytes < 1:
            raise ValueError(f"{device}: max_line_bytes must be positive")
        self.device = device
        self.url = url
        self.usb_serial_number = usb_serial_number
        self.eol = eol
        self.max_line_bytes = max_line_bytes
        self._settings: dict[str, Any] = {
            "baudrate": baudrate,
            "bytesize": bytesize,
            "parity": parity,
            "stopbits": stopbits,
            "exclusive": exclusive,
        }
        self._port_finder = port_finder
        self._io_clock: Clock = io_clock if io_clock is not None else MonotonicClock()
        self._lock = asyncio.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._port: Any = None
        self._path: str | None = None
        self._closed = True
        # Everything below is touched only by the worker thread (or while no job can be running).
        self._buffer = bytearray()
        self._last_byte: int | None = None

    # ----------------------------------------------------------------------------------------------- state

    @property
    def is_open(self) -> bool:
        """True while the port is open."""
        return self._port is not None

    @property
    def path(self) -> str | None:
        """The path or URL the port is (or was last) open on."""
        return self._path

    @property
    def at_line_start(self) -> bool | None:
        """True/False when the next received byte starts/continues a line; None when unknown."""
        if self._last_byte is None:
            return None
        return self._last_byte == self.eol[-1]

    # ------------------------------------------------------------------------------------------- lifecycle

    async def open(self) -> None:
        """Open the port (idempotent); raises `DeviceDisconnected` when it cannot be opened."""
        async with self._lock:
            self._closed = False
            await self._ensure_open()

    async def close(self) -> None:
        """Close the port and stop the worker thread (idempotent)."""
        async with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            if executor is None:
                return
            try:
                if self._port is not None:
                    await asyncio.wrap_future(executor.submit(self._close_port_blocking))
            finally:
                # The queue is empty and the job above has finished, so this returns at once.
                executor.shutdown(wait=True)

    # --------------------------------------------------------------------------------------------- I/O API

    async def write(self, data: bytes, *, timeout_s: float, command: str | None = None) -> None:
        """Write `data` completely within `timeout_s`."""
        cmd = command if command is not None else _show(data)
        async with self._lock:
            await self._ensure_open()
            await self._run(self._write_job, data, timeout_s, cmd, timeout_s=timeout_s, command=cmd)

    async def read_line(self, *, timeout_s: float, command: str) -> bytes:
        """Read the next complete line (terminator included) within `timeout_s`."""
        async with self._lock:
            await self._ensure_open()
            return await self._run(self._read_line_job, timeout_s, command, timeout_s=timeout_s, command=command)

    async def discard_input(self) -> bytes:
        """Drop everything received but not yet read; returns what was dropped."""
        async with self._lock:
            await self._ensure_open()
            return await self._run(self._discard_blocking, "discard input", timeout_s=1.0, command="discard input")

    async def query_line(
        self,
        request: bytes,
        *,
        timeout_s: float,
        command: str | None = None,
        skip_partial_when_unknown: bool = False,
        newest: bool = True,
    ) -> bytes:
        """Discard stale input, send `request`, and return one complete reply line (terminator included).

        A first line known to be partial (stale input was cut mid-line) is skipped. With
        `skip_partial_when_unknown` the first line is also skipped when the position is unknown, which suits a
        device that streams unasked. With `newest`, complete lines already received behind the first one win,
        so a streaming device yields its freshest line.
        """
        cmd = command if command is not None else _show(request)
        async with self._lock:
            await self._ensure_open()
            return await self._run(
                self._query_job,
                request,
                timeout_s,
                cmd,
                skip_partial_when_unknown,
                newest,
                timeout_s=timeout_s,
                command=cmd,
            )

    # ------------------------------------------------------------------------------------- async plumbing

    async def _ensure_open(self) -> None:
        """Open the port if it is closed; the lock is held."""
        if self._closed:
            raise DeviceDisconnected(self.device, "open", "the line is closed; call open() first")
        if self._port is not None:
            return
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix=f"serial-line-{self.device}"
            )
        await self._run(self._open_job, timeout_s=10.0, command="open")

    async def _run(self, fn: Callable[..., _T], /, *args: Any, timeout_s: float, command: str) -> _T:
        """Run `fn(*args)` in the worker thread; guard against a worker that never returns."""
        executor = self._executor
        if executor is None:
            raise DeviceDisconnected(self.device, command, "the line is closed")
        future = executor.submit(fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout_s + _GUARD_GRACE_S)
        except TimeoutError:
            if future.done():
                raise
            # The worker is stuck inside pyserial. Abandon it: the port is closed by that thread once the
            # stuck call returns, and the next call starts a fresh worker and reopens the port.
            self._abandon_worker(executor)
            raise DeviceTimeout(
                self.device, command, f"the I/O thread did not return within {timeout_s + _GUARD_GRACE_S} s"
            ) from None

    def _abandon_worker(self, executor: concurrent.futures.ThreadPoolExecutor) -> None:
        """Hand the port to the stuck worker for closing and forget both."""
        port, self._port = self._port, None
        self._executor = None
        if port is not None:
            executor.submit(_close_quietly, port)
        executor.shutdown(wait=False)

    # ------------------------------------------------------------------------------ worker-thread jobs

    def _open_job(self) -> None:
        """Resolve the path and open the port."""
        path = self.url
        if self.usb_serial_number is not None:
            try:
                found = self._port_finder(self.usb_serial_number)
            except Exception as exc:  # a port finder failure is a lookup failure, nothing more
                found = None
                if path is None:
                    detail = f"looking up USB serial number {self.usb_serial_number!r} failed: {exc}"
                    raise DeviceDisconnected(self.device, "open", detail) from exc
            if found is not None:
                path = found
        if path is None:
            raise DeviceDisconnected(
                self.device, "open", f"no serial port with USB serial number {self.usb_serial_number!r}"
            )
        try:
            port = serial.serial_for_url(path, timeout=0, write_timeout=1.0, **self._settings)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DeviceDisconnected(self.device, f"open {path}", str(exc)) from exc
        self._port = port
        self._path = path
        self._buffer.clear()
        self._last_byte = None

    def _close_port_blocking(self) -> None:
        """Close the port if open."""
        port, self._port = self._port, None
        self._buffer.clear()
        self._last_byte = None
        if port is not None:
            _close_quietly(port)

    def _lost(self, command: str, exc: BaseException) -> DeviceDisconnected:
        """Close the port after an I/O failure and build the error to raise."""
        path = self._path
        self._close_port_blocking()
        return DeviceDisconnected(self.device, command, f"port {path} failed: {exc}")

    def _remaining(self, deadline: float) -> float:
        """Seconds left before `deadline`."""
        return deadline - self._io_clock.now()

    def _receive(self, timeout_s: float, command: str) -> bytes:
        """Wait up to `timeout_s` for at least one byte, then take what else is already there."""
        port = self._port
        try:
            port.timeout = max(timeout_s, 0.0)
            chunk = bytes(port.read(1))
            if chunk:
                port.timeout = 0
                chunk += bytes(port.read(4096))
        except serial.SerialTimeoutException as exc:
            raise DeviceTimeout(self.device, command, str(exc)) from exc
        except (serial.SerialException, OSError) as exc:
            raise self._lost(command, exc) from exc
        if chunk:
            self._last_byte = chunk[-1]
        return chunk

    def _discard_blocking(self, command: str = "discard input") -> bytes:
        """Drop buffered and pending input without waiting; returns the dropped bytes."""
        if self._port is None:
            raise DeviceDisconnected(self.device, command, "port is not open")
        dropped = bytearray(self._buffer)
        self._buffer.clear()
        while len(dropped) < _MAX_DISCARD_BYTES:
            chunk = self._receive(0.0, command)
            if not chunk:
                break
            dropped += chunk
        return bytes(dropped)

    def _write_blocking(self, data: bytes, deadline: float, command: str) -> None:
        """Write all of `data` before `deadline`."""
        port = self._port
        if port is None:
            raise DeviceDisconnected(self.device, command, "port is not open")
        try:
            port.write_timeout = max(self._remaining(deadline), 0.001)
            written = port.write(data)
        except serial.SerialTimeoutException as exc:
            raise DeviceTimeout(self.device, command, "write did not complete in time") from exc
        except (serial.SerialException, OSError) as exc:
            raise self._lost(command, exc) from exc
        if written is not None and written != len(data):
            raise DeviceTimeout(self.device, command, f"only {written} of {len(data)} bytes were written")

    def _pop_line(self) -> bytes | None:
        """Take one complete line from the buffer, if there is one."""
        idx = self._buffer.find(self.eol)
        if idx < 0:
            return None
        end = idx + len(self.eol)
        line = bytes(self._buffer[:end])
        del self._buffer[:end]
        return line

    def _read_line_blocking(self, deadline: float, timeout_s: float, command: str) -> bytes:
        """Read one complete line before `deadline`."""
        while True:
            line = self._pop_line()
            if line is not None:
                return line
            if len(self._buffer) > self.max_line_bytes:
                partial = bytes(self._buffer)
                self._buffer.clear()
                detail = f"no line terminator {self.eol!r} within {self.max_line_bytes} bytes"
                raise DeviceProtocolError(self.device, command, detail, partial)
            remaining = self._remaining(deadline)
            if remaining <= 0:
                got = bytes(self._buffer) if self._buffer else None
                detail = f"no complete reply line within {timeout_s:g} s"
                raise DeviceTimeout(self.device, command, detail, got)
            if self._port is None:
                raise DeviceDisconnected(self.device, command, "port is not open")
            self._buffer += self._receive(remaining, command)

    def _write_job(self, data: bytes, timeout_s: float, command: str) -> None:
        """Worker job: write."""
        self._write_blocking(data, self._io_clock.now() + timeout_s, command)

    def _read_line_job(self, timeout_s: float, command: str) -> bytes:
        """Worker job: read one line."""
        return self._read_line_blocking(self._io_clock.now() + timeout_s, timeout_s, command)

    def _query_job(
        self, request: bytes, timeout_s: float, command: str, skip_partial_when_unknown: bool, newest: bool
    ) -> bytes:
        """Worker job: discard stale input, write, read the reply line."""
        deadline = self._io_clock.now() + timeout_s
        self._discard_blocking(command)
        position = self.at_line_start
        self._write_blocking(request, deadline, command)
        line = self._read_line_blocking(deadline, timeout_s, command)
        if position is False or (position is None and skip_partial_when_unknown):
            line = self._read_line_blocking(deadline, timeout_s, command)
        if newest:
            while (later := self._pop_line()) is not None:
                line = later
        return line


def _close_quietly(port: Any) -> None:
    """Close a pyserial port, ignoring errors from a port that is already gone."""
    with contextlib.suppress(Exception):
        port.close()


def _show(data: bytes) -> str:
    """A command as it appears in error messages."""
    return data.decode("ascii", errors="backslashreplace").rstrip("\r\n") or repr(data)
