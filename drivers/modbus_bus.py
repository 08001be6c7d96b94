"""One Modbus RTU master per RS-485 line, shared by every slave on it.

Layers, bottom up (each small enough to test on its own):

- `_SerialLink`: a non-blocking byte pipe over pyserial (`/dev/ttyUSB0` or `socket://host:port`), read through
  the event loop; it knows nothing about Modbus.
- RTU framing: `crc16_modbus`, request encoding, and `_expected_length` which decides from the first bytes how
  long the reply must be.
- `ModbusBus`: per-bus lock, inter-frame silent gap, explicit timeout per call, bounded retries
  (tenacity), and the mapping of every failure onto `drivers.errors`, naming the device, function,
  register and the bytes that came back.

Why this does not use pymodbus' client: see docs/decisions/0010-modbus-transport.md (it reports a reply with a
bad CRC exactly like silence, after the full timeout).

Wire timing (silent gap, reply deadlines) uses the event loop's monotonic clock: it is a property of the wire,
not experiment time, and it must not be scaled by a simulation speed factor. No timestamps are produced here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any

import serial
from serial.tools import list_ports
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from drivers.errors import (
    DeviceDisconnected,
    DeviceError,
    DeviceExceptionReply,
    DeviceProtocolError,
    DeviceTimeout,
)

__all__ = [
    "MODBUS_EXCEPTION_NAMES",
    "ModbusBus",
    "crc16_modbus",
    "int32_from_words",
    "int32_to_words",
]

_log = logging.getLogger(__name__)

FC_READ_HOLDING = 0x03
FC_WRITE_SINGLE = 0x06
FC_WRITE_MULTIPLE = 0x10

# The Modbus serial line spec times RTU characters as 11 bits (start + 8 data + parity or 2nd stop + stop).
_BITS_PER_CHAR = 11
_FAST_BAUD_GAP_S = 0.00175  # fixed t3.5 above 19200 baud
_MAX_READ_COUNT = 125
_MAX_WRITE_COUNT = 123
_POLL_S = 0.0005  # only used where the event loop cannot watch the port's file descriptor

MODBUS_EXCEPTION_NAMES: dict[int, str] = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}

_FUNCTION_NAMES = {
    FC_READ_HOLDING: "FC03 read",
    FC_WRITE_SINGLE: "FC06 write",
    FC_WRITE_MULTIPLE: "FC16 write",
}


def _build_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _build_crc_table()


def crc16_modbus(data: bytes) -> int:
    """Return the CRC-16/MODBUS of `data` (reflected poly 0xA001, init 0xFFFF); send it low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def _with_crc(frame: bytes) -> bytes:
    return frame + struct.pack("<H", crc16_modbus(frame))


def int32_from_words(high: int, low: int) -> int:
    """Decode a signed int32 sent as two registers, high word first."""
    return int(struct.unpack(">i", struct.pack(">HH", high, low))[0])


def int32_to_words(value: int) -> tuple[int, int]:
    """Encode a signed int32 as two registers, high word first; raises ValueError outside int32."""
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"{value} does not fit a signed 32-bit register pair")
    high, low = struct.unpack(">HH", struct.pack(">i", value))
    return int(high), int(low)


def _list_comports() -> list[Any]:
    return list(list_ports.comports())


def _hex(data: bytes) -> str:
    return data.hex(" ").upper()


class _SerialLink:
    """A non-blocking byte pipe over one open pyserial port; knows nothing about Modbus."""

    def __init__(self, port: Any) -> None:
        self._port = port
        fileno = getattr(port, "fileno", None)
        self._fd: int | None = None
        if fileno is not None:
            try:
                self._fd = int(fileno())
            except Exception:  # backends without a selectable handle are polled instead
                self._fd = None

    @classmethod
    def open(
        cls, url: str, *, baudrate: int, bytesize: int, parity: str, stopbits: float, write_timeout_s: float
    ) -> _SerialLink:
        """Open `url`; raises serial.SerialException or OSError when the port is missing or busy."""
        port = serial.serial_for_url(
            url,
            baudrate=baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=stopbits,
            timeout=0,
            write_timeout=write_timeout_s,
            exclusive=True,
        )
        return cls(port)

    def read_now(self) -> bytes:
        """Return whatever bytes are waiting, without blocking."""
        return bytes(self._port.read(4096))

    def discard_input(self) -> bytes:
        """Drop and return stale bytes waiting in the receive buffer."""
        stale = bytearray()
        while chunk := self.read_now():
            stale += chunk
        return bytes(stale)

    def write(self, frame: bytes) -> None:
        """Write a whole frame; raises serial.SerialException on failure."""
        written = self._port.write(frame)
        if written is not None and written != len(frame):
            raise serial.SerialTimeoutException(f"only {written} of {len(frame)} bytes written")

    async def read_some(self, timeout_s: float) -> bytes:
        """Wait up to `timeout_s` for bytes and return them (empty on timeout)."""
        if data := self.read_now():
            return data
        if timeout_s <= 0:
            return b""
        loop = asyncio.get_running_loop()
        if self._fd is not None:
            ready: asyncio.Future[None] = loop.create_future()

            def on_readable() -> None:
                if not ready.done():
                    ready.set_result(None)

            try:
                loop.add_reader(self._fd, on_readable)
            except (NotImplementedError, ValueError):  # e.g. the Windows proactor loop
                self._fd = None
            else:
                try:
                    async with asyncio.timeout(timeout_s):
                        await ready
                except TimeoutError:
                    return b""
                finally:
                    loop.remove_reader(self._fd)
                return self.read_now()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            await asyncio.sleep(_POLL_S)
            if data := self.read_now():
                return data
        return b""

    def close(self) -> None:
        """Close the port, ignoring errors from a port that is already gone."""
        try:
            self._port.close()
        except Exception as exc:
            _log.debug("closing a broken port: %s", exc)


def _expected_length(head: bytes, device_id: int, function: int) -> int | None:
    """Length of the reply starting with `head`, None if more bytes are needed, -1 if it cannot be a reply."""
    if len(head) < 2:
        return None
    if head[0] != device_id or head[1] not in (function, function | 0x80):
        return -1
    if head[1] & 0x80:
        return 5
    if function == FC_READ_HOLDING:
        return None if len(head) < 3 else 5 + head[2]
    return 8


class ModbusBus:
    """A Modbus RTU master for one serial line; every slave on the line shares this one object."""

    def __init__(
        self,
        *,
        port: str,
        baudrate: int = 9600,
        bytesize: int = 8,
        parity: str = "N",
        stopbits: float = 1,
        timeout_s: float = 0.5,
        retries: int = 2,
        usb_serial: str | None = None,
        name: str = "rs485",
        port_finder: Callable[[], Iterable[Any]] | None = None,
    ) -> None:
        if baudrate <= 0:
            raise ValueError(f"{name}: baudrate must be positive, got {baudrate}")
        if bytesize not in (5, 6, 7, 8):
            raise ValueError(f"{name}: bytesize must be 5..8, got {bytesize}")
        if parity not in ("N", "E", "O", "M", "S"):
            raise ValueError(f"{name}: parity must be one of N E O M S, got {parity!r}")
        if stopbits not in (1, 1.5, 2):
            raise ValueError(f"{name}: stopbits must be 1, 1.5 or 2, got {stopbits}")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"{name}: timeout_s must be a positive number of seconds, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"{name}: retries must be >= 0, got {retries}")
        self.name = name
        self.port = port
        self.baudrate = baudrate
        self.bytesize = bytesize
        self.parity = parity
        self.stopbits = stopbits
        self.timeout_s = timeout_s
        self.retries = retries
        self.usb_serial = usb_serial
        # what lists the serial ports and their USB serial numbers (pyserial's list_ports by default; a test
        # or a simulator may list its own endpoints, which is how a re-plugged adapter's new path is found)
        self.port_finder: Callable[[], Iterable[Any]] = port_finder or _list_comports
        #: how many times the port has been opened: a device verified on an earlier opening must be re-verified
        #: (the adapter may have been re-plugged and the device power-cycled meanwhile)
        self.link_generation = 0
        self._lock = asyncio.Lock()
        self._link: _SerialLink | None = None
        self._line_free_at = 0.0
        self._users: set[str] = set()

    # ------------------------------------------------------------------ timing

    @property
    def silent_gap_s(self) -> float:
        """The inter-frame silence (3.5 characters; fixed 1.75 ms above 19200 baud)."""
        if self.baudrate > 19200:
            return _FAST_BAUD_GAP_S
        return 3.5 * _BITS_PER_CHAR / self.baudrate

    def wire_time_s(self, n_bytes: int) -> float:
        """Time `n_bytes` take on the wire at this baud rate (11-bit characters)."""
        return n_bytes * _BITS_PER_CHAR / self.baudrate

    # ------------------------------------------------------------- connection

    @property
    def is_open(self) -> bool:
        """True while the port is open."""
        return self._link is not None

    async def open(self) -> None:
        """Open the port now (idempotent); raises DeviceDisconnected if it cannot be found or opened."""
        async with self._lock:
            self._ensure_open(self.name)

    async def close(self) -> None:
        """Close the port; the next transaction re-opens it."""
        async with self._lock:
            await self._drop_link()

    async def attach(self, user: str) -> None:
        """Register a device using this bus and open the port (idempotent per user)."""
        self._users.add(user)
        await self.open()

    async def detach(self, user: str) -> None:
        """Unregister a device; the port closes when the last user detaches."""
        self._users.discard(user)
        if not self._users:
            await self.close()

    async def __aenter__(self) -> ModbusBus:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _resolve_port(self, device: str) -> str:
        if self.usb_serial is None:
            return self.port
        for info in self.port_finder():
            if getattr(info, "serial_number", None) == self.usb_serial:
                path = str(info.device)
                if path != self.port:
                    _log.warning("%s: USB serial %s is now at %s (was %s)", self.name, self.usb_serial, path, self.port)
                    self.port = path
                return path
        raise DeviceDisconnected(
            device,
            f"find port of {self.name}",
            f"no serial port with USB serial number {self.usb_serial!r} is present (last seen at {self.port})",
        )

    def _ensure_open(self, device: str) -> _SerialLink:
        if self._link is not None:
            return self._link
        path = self._resolve_port(device)
        try:
            self._link = _SerialLink.open(
                path,
                baudrate=self.baudrate,
                bytesize=self.bytesize,
                parity=self.parity,
                stopbits=self.stopbits,
                write_timeout_s=self.timeout_s,
            )
        except (serial.SerialException, OSError) as exc:
            raise DeviceDisconnected(device, f"open {path} ({self.name})", f"cannot open the port: {exc}") from exc
        self.link_generation += 1
        _log.info("%s: opened %s at %d baud (opening %d)", self.name, path, self.baudrate, self.link_generation)
        return self._link

    async def _drop_link(self) -> None:
        # Closed in a worker thread: pyserial's socket:// close sleeps 0.3 s ("give the server some time"),
        # which would stall every other device on the event loop, right when a line has failed.
        link, self._link = self._link, None
        if link is not None:
            await asyncio.to_thread(link.close)

    # ---------------------------------------------------------- transactions

    async def read_holding(
        self,
        device: str,
        device_id: int,
        address: int,
        count: int,
        *,
        what: str,
        timeout_s: float | None = None,
        retry: bool = True,
    ) -> list[int]:
        """Read `count` holding registers (FC03) from slave `device_id`; reads are retried by default."""
        _check_device_id(device_id)
        _check_register_span(address, count, _MAX_READ_COUNT)
        request = _with_crc(struct.pack(">BBHH", device_id, FC_READ_HOLDING, address, count))
        command = self._command(FC_READ_HOLDING, device_id, address, count, what)
        frame = await self._transact(
            device,
            device_id,
            FC_READ_HOLDING,
            request,
            5 + 2 * count,
            command,
            timeout_s=timeout_s,
            retry=retry,
        )
        if frame[2] != 2 * count:
            raise DeviceProtocolError(device, command, f"byte count {frame[2]}, expected {2 * count}", _hex(frame))
        return list(struct.unpack(f">{count}H", frame[3:-2]))

    async def write_register(
        self,
        device: str,
        device_id: int,
        address: int,
        value: int,
        *,
        what: str,
        timeout_s: float | None = None,
        idempotent: bool = False,
    ) -> None:
        """Write one register (FC06); retried only when the caller says repeating it is harmless."""
        _check_device_id(device_id)
        _check_register_span(address, 1, 1)
        _check_word(value, address)
        request = _with_crc(struct.pack(">BBHH", device_id, FC_WRITE_SINGLE, address, value))
        command = self._command(FC_WRITE_SINGLE, device_id, address, 1, what, [value])
        frame = await self._transact(
            device, device_id, FC_WRITE_SINGLE, request, 8, command, timeout_s=timeout_s, retry=idempotent
        )
        if frame[:6] != request[:6]:
            raise DeviceProtocolError(device, command, "the echo differs from the request", _hex(frame))

    async def write_registers(
        self,
        device: str,
        device_id: int,
        address: int,
        values: Sequence[int],
        *,
        what: str,
        timeout_s: float | None = None,
        idempotent: bool = False,
    ) -> None:
        """Write consecutive registers (FC16); retried only when the caller says repeating it is harmless."""
        _check_device_id(device_id)
        count = len(values)
        _check_register_span(address, count, _MAX_WRITE_COUNT)
        for offset, value in enumerate(values):
            _check_word(value, address + offset)
        request = _with_crc(
            struct.pack(f">BBHHB{count}H", device_id, FC_WRITE_MULTIPLE, address, count, 2 * count, *values)
        )
        command = self._command(FC_WRITE_MULTIPLE, device_id, address, count, what, list(values))
        frame = await self._transact(
            device, device_id, FC_WRITE_MULTIPLE, request, 8, command, timeout_s=timeout_s, retry=idempotent
        )
        if frame[2:6] != request[2:6]:
            raise DeviceProtocolError(device, command, "the reply names other registers than were written", _hex(frame))

    def _command(
        self,
        function: int,
        device_id: int,
        address: int,
        count: int,
        what: str,
        values: list[int] | None = None,
    ) -> str:
        span = f"0x{address:04X}" if count == 1 else f"0x{address:04X}-0x{address + count - 1:04X}"
        data = "" if values is None else " <- [" + ", ".join(f"0x{v:04X}" for v in values) + "]"
        return f"{_FUNCTION_NAMES[function]} {span} ({what}){data} on slave {device_id} via {self.name}"

    async def _transact(
        self,
        device: str,
        device_id: int,
        function: int,
        request: bytes,
        reply_len: int,
        command: str,
        *,
        timeout_s: float | None,
        retry: bool,
    ) -> bytes:
        timeout = self.timeout_s if timeout_s is None else timeout_s
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"{device}: {command}: timeout_s must be positive, got {timeout}")
        attempts = self.retries + 1 if retry else 1
        frame = b""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(attempts),
            retry=retry_if_exception_type((DeviceTimeout, DeviceProtocolError)),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    _log.warning(
                        "%s: %s: retry %d of %d",
                        device,
                        command,
                        attempt.retry_state.attempt_number - 1,
                        attempts - 1,
                    )
                # The lock is taken per attempt: a waiting device (an emergency stop) can go between retries.
                async with self._lock:
                    frame = await self._exchange(device, device_id, function, request, reply_len, command, timeout)
        return frame

    async def _exchange(
        self,
        device: str,
        device_id: int,
        function: int,
        request: bytes,
        reply_len: int,
        command: str,
        timeout_s: float,
    ) -> bytes:
        loop = asyncio.get_running_loop()
        link = self._ensure_open(device)
        if (wait_s := self._line_free_at - loop.time()) > 0:
            await asyncio.sleep(wait_s)
        try:
            if stale := link.discard_input():
                _log.warning(
                    "%s: discarded %d stale byte(s) before %s: %s",
                    self.name,
                    len(stale),
                    command,
                    _hex(stale),
                )
            link.write(request)
        except serial.SerialTimeoutException as exc:
            self._line_free_at = loop.time() + self.silent_gap_s
            raise DeviceTimeout(device, command, f"the request could not be written: {exc}") from exc
        except (serial.SerialException, OSError) as exc:
            await self._drop_link()
            raise DeviceDisconnected(device, command, f"the port went away while sending: {exc}") from exc
        deadline = loop.time() + self.wire_time_s(len(request)) + timeout_s + self.wire_time_s(reply_len)
        # Until a reply is complete, assume the slave may still talk until the deadline (covers cancellation).
        self._line_free_at = deadline
        try:
            frame = await self._receive(link, device, device_id, function, command, deadline, timeout_s)
        except DeviceDisconnected:
            await self._drop_link()
            raise
        except DeviceError:
            self._line_free_at = loop.time() + self.silent_gap_s
            raise
        self._line_free_at = loop.time() + self.silent_gap_s
        return frame

    async def _receive(
        self,
        link: _SerialLink,
        device: str,
        device_id: int,
        function: int,
        command: str,
        deadline: float,
        timeout_s: float,
    ) -> bytes:
        loop = asyncio.get_running_loop()
        buf = bytearray()
        need: int | None = None
        while True:
            if need is None and (need := _expected_length(bytes(buf), device_id, function)) == -1:
                await self._collect_until_quiet(link, buf, deadline, device, command)
                raise DeviceProtocolError(
                    device,
                    command,
                    f"garbled reply: expected slave {device_id} function 0x{function:02X}",
                    _hex(bytes(buf)),
                )
            if need is not None and len(buf) >= need:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                if not buf:
                    raise DeviceTimeout(device, command, f"no reply (nothing came back) within {timeout_s:.3f} s")
                raise DeviceTimeout(
                    device,
                    command,
                    f"incomplete reply after {timeout_s:.3f} s "
                    f"({len(buf)} of {need if need is not None else '?'} bytes)",
                    _hex(bytes(buf)),
                )
            buf += await self._read(link, remaining, device, command)
        frame = bytes(buf[:need])
        if trailing := bytes(buf[need:]):
            _log.warning("%s: %d byte(s) after the reply to %s: %s", self.name, len(trailing), command, _hex(trailing))
        received_crc = frame[-2] | (frame[-1] << 8)
        computed_crc = crc16_modbus(frame[:-2])
        if received_crc != computed_crc:
            raise DeviceProtocolError(
                device,
                command,
                f"bad CRC: the frame carries 0x{received_crc:04X}, its bytes give 0x{computed_crc:04X}",
                _hex(frame),
            )
        if frame[1] & 0x80:
            code = frame[2]
            label = MODBUS_EXCEPTION_NAMES.get(code, "unknown exception code")
            raise DeviceExceptionReply(device, command, f"Modbus exception {code} ({label})", _hex(frame), code=code)
        return frame

    async def _read(self, link: _SerialLink, timeout_s: float, device: str, command: str) -> bytes:
        try:
            return await link.read_some(timeout_s)
        except (serial.SerialException, OSError) as exc:
            raise DeviceDisconnected(device, command, f"the port went away while waiting for the reply: {exc}") from exc

    async def _collect_until_quiet(
        self, link: _SerialLink, buf: bytearray, deadline: float, device: str, command: str
    ) -> None:
        """Read the rest of a garbled reply until the line is silent for one gap (or the deadline)."""
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            chunk = await self._read(link, min(remaining, self.silent_gap_s), device, command)
            if not chunk:
                return
            buf += chunk


def _check_device_id(device_id: int) -> None:
    if not 1 <= device_id <= 247:
        raise ValueError(f"Modbus slave id must be 1..247 (broadcast is not supported), got {device_id}")


def _check_register_span(address: int, count: int, max_count: int) -> None:
    if not 0 <= address <= 0xFFFF:
        raise ValueError(f"register address must be 0x0000..0xFFFF, got {address:#x}")
    if not 1 <= count <= max_count:
        raise ValueError(f"register count must be 1..{max_count}, got {count}")
    if address + count - 1 > 0xFFFF:
        raise ValueError(f"registers 0x{address:04X}+{count} run past 0xFFFF")


def _check_word(value: int, address: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"value for register 0x{address:04X} must be 0..0xFFFF, got {value}")
