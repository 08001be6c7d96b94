"""An RS-485 Modbus RTU line carried byte for byte over TCP: one or more slaves on one half-duplex bus.

Clients open `socket://127.0.0.1:PORT` exactly as they would open a serial port. Three layers, kept apart:

- framing (`rtu_frame_length`): where a request ends, from its function code, or a silent gap for codes whose
  length cannot be known in advance;
- messages (`handle_pdu`): FC03 read holding registers, FC06 write one register, FC16 write registers, and the
  exception replies a real slave gives (01 illegal function, 02 illegal address, 03 illegal value);
- transport (`RtuLineServer`): the TCP server, the per-line lock (one transaction at a time on the bus, shared
  by every connection to the line), the wire-time emulation and the faults.

Behaviour of the line, as on a real bus: a request with a bad CRC gets no reply, a request for a slave id that
is not on the line gets no reply, a broadcast (id 0) write is executed by every slave and answered by none. A
partial frame followed by `resync_s` of silence is discarded, like a real slave's receiver after a frame gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol

from hardware_sim.crc16 import crc_ok, with_crc
from hardware_sim.faults import Faults
from hardware_sim.line_timing import LineTiming

__all__ = [
    "DEFAULT_FUNCTION_CODES",
    "ILLEGAL_ADDRESS",
    "ILLEGAL_FUNCTION",
    "ILLEGAL_VALUE",
    "SLAVE_FAILURE",
    "ModbusError",
    "RtuLineServer",
    "RtuSlave",
    "handle_pdu",
    "rtu_frame_length",
]

_log = logging.getLogger(__name__)

ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
SLAVE_FAILURE = 0x04

FC_READ_HOLDING = 0x03
FC_WRITE_SINGLE = 0x06
FC_WRITE_MULTIPLE = 0x10
DEFAULT_FUNCTION_CODES = frozenset({FC_READ_HOLDING, FC_WRITE_SINGLE, FC_WRITE_MULTIPLE})

_MAX_READ_COUNT = 125
_MAX_WRITE_COUNT = 123
_BROADCAST_ID = 0
_MIN_GAP_S = 0.005  # silence that ends a frame of unknown length (wall seconds), at least
_MIN_RESYNC_S = 0.05  # silence after which a partial frame is thrown away (wall seconds), at least
_DISCONNECT_POLL_S = 0.01
_CLOSE_WAIT_S = 1.0


class ModbusError(Exception):
    """A slave refuses a request with a Modbus exception code."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message or f"modbus exception {code:#04x}")
        self.code = code


class RtuSlave(Protocol):
    """What a simulated Modbus slave offers the line (an optional `function_codes` set narrows FC support)."""

    slave_id: int
    faults: Faults

    def response_delay_s(self) -> float:
        """The device's own turnaround before it answers (s)."""
        ...

    def read_registers(self, address: int, count: int) -> list[int]:
        """Holding registers `address`..`address+count-1`; raises ModbusError(2/3)."""
        ...

    def write_registers(self, address: int, values: Sequence[int]) -> None:
        """Write holding registers from `address` on; raises ModbusError(2/3/4)."""
        ...


# ------------------------------------------------------------------- framing


def rtu_frame_length(buf: bytes | bytearray) -> int | None:
    """Bytes the request at the start of `buf` needs (a lower bound while the header is incomplete); None = unknown."""
    if len(buf) < 2:
        return 2
    fc = buf[1]
    if 1 <= fc <= 6:
        return 8
    if fc in (0x0F, 0x10):
        return 7 if len(buf) < 7 else 9 + buf[6]
    if fc == 0x16:
        return 10
    if fc == 0x17:
        return 11 if len(buf) < 11 else 13 + buf[10]
    return None


# ------------------------------------------------------------------ messages


def _exception(fc: int, code: int) -> bytes:
    return bytes([(fc | 0x80) & 0xFF, code])


def _word(pdu: bytes, offset: int) -> int:
    return int.from_bytes(pdu[offset : offset + 2], "big")


def handle_pdu(slave: RtuSlave, pdu: bytes) -> bytes:
    """Execute one request PDU (function code + data) on `slave` and return the reply PDU."""
    fc = pdu[0]
    supported: frozenset[int] = getattr(slave, "function_codes", DEFAULT_FUNCTION_CODES)
    if fc not in supported or fc not in DEFAULT_FUNCTION_CODES:
        return _exception(fc, ILLEGAL_FUNCTION)
    try:
        if fc == FC_READ_HOLDING:
            if len(pdu) != 5:
                return _exception(fc, ILLEGAL_VALUE)
            address, count = _word(pdu, 1), _word(pdu, 3)
            if not 1 <= count <= _MAX_READ_COUNT:
                return _exception(fc, ILLEGAL_VALUE)
            if address + count > 0x10000:
                return _exception(fc, ILLEGAL_ADDRESS)
            values = slave.read_registers(address, count)
            if len(values) != count:
                raise ModbusError(SLAVE_FAILURE, f"slave returned {len(values)} registers, asked for {count}")
            data = b"".join((v & 0xFFFF).to_bytes(2, "big") for v in values)
            return bytes([fc, len(data)]) + data
        if fc == FC_WRITE_SINGLE:
            if len(pdu) != 5:
                return _exception(fc, ILLEGAL_VALUE)
            slave.write_registers(_word(pdu, 1), [_word(pdu, 3)])
            return bytes(pdu)
        # FC16
        if len(pdu) < 6:
            return _exception(fc, ILLEGAL_VALUE)
        address, count, byte_count = _word(pdu, 1), _word(pdu, 3), pdu[5]
        if not 1 <= count <= _MAX_WRITE_COUNT or byte_count != 2 * count or len(pdu) != 6 + byte_count:
            return _exception(fc, ILLEGAL_VALUE)
        if address + count > 0x10000:
            return _exception(fc, ILLEGAL_ADDRESS)
        slave.write_registers(address, [_word(pdu, 6 + 2 * i) for i in range(count)])
        return bytes(pdu[:5])
    except ModbusError as exc:
        return _exception(fc, exc.code)
    except Exception:  # a simulator bug: answer like a failing device, and say so in the log
        _log.exception("slave %s failed on request %s", slave.slave_id, pdu.hex(" "))
        return _exception(fc, SLAVE_FAILURE)


def _covers(pdu: bytes, register: int) -> bool:
    """True when `pdu` is a write (FC06/FC16) that includes `register` (0: never)."""
    if not register or len(pdu) < 5 or pdu[0] not in (FC_WRITE_SINGLE, FC_WRITE_MULTIPLE):
        return False
    address = _word(pdu, 1)
    count = 1 if pdu[0] == FC_WRITE_SINGLE else _word(pdu, 3)
    return address <= register < address + count


# ----------------------------------------------------------------- transport


class RtuLineServer:
    """A TCP server carrying the exact bytes of one RS-485 Modbus RTU line with its slaves."""

    def __init__(
        self,
        *,
        slaves: Iterable[RtuSlave] = (),
        timing: LineTiming | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        name: str = "rtu-line",
        usb_serial: str | None = None,
    ) -> None:
        self.usb_serial = usb_serial or f"SIM-{name.upper()}"  # the adapter's USB serial number (see reopen)
        self.timing = timing if timing is not None else LineTiming()
        self.host = host
        self.name = name
        self._requested_port = port
        self._port: int | None = None
        self._slaves: dict[int, RtuSlave] = {}
        for slave in slaves:
            self.add_slave(slave)
        self._server: asyncio.Server | None = None
        self._lock = asyncio.Lock()
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._closing = False
        self.requests_seen = 0  # complete frames received (any CRC, any slave)
        self.connections_refused = 0  # connections closed at once because the line was disconnected
        self.connections_accepted = 0  # connections served since start (a peer that opened the line at all)

    # -------------------------------------------------------------- slaves
    def add_slave(self, slave: RtuSlave) -> None:
        """Put a slave on the line; ids must be unique and 1..247."""
        if not 1 <= slave.slave_id <= 247:
            raise ValueError(f"{self.name}: slave id must be 1..247, got {slave.slave_id}")
        if slave.slave_id in self._slaves:
            raise ValueError(f"{self.name}: slave id {slave.slave_id} is already on this line")
        self._slaves[slave.slave_id] = slave

    @property
    def slaves(self) -> Mapping[int, RtuSlave]:
        """The slaves on the line by id."""
        return MappingProxyType(self._slaves)

    # ----------------------------------------------------------- lifecycle
    async def start(self) -> int:
        """Start listening; returns the TCP port."""
        if self._server is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._closing = False
        self._server = await asyncio.start_server(self._handle, self.host, self._requested_port)
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name=f"{self.name}-disconnect-watch")
        return self._port

    async def close(self) -> None:
        """Stop listening, drop every connection and end every task this server started."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await asyncio.sleep(0)  # let connections accepted just now register themselves
        tasks = list(self._connections)
        for writer in list(self._connections.values()):
            writer.close()  # the handler sees end of stream and returns
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_CLOSE_WAIT_S)
            for task in pending:  # e.g. a long `delay_s` fault in progress
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def reopen(self, port: int = 0) -> int:
        """The adapter is re-plugged and comes back under a new path: every connection drops, the line listens on
        `port` (0: a new free port) with the same slaves and state; returns the new TCP port."""
        await self.close()
        self._requested_port = port
        return await self.start()

    async def __aenter__(self) -> RtuLineServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        """The TCP port (after start)."""
        if self._port is None:
            raise RuntimeError(f"{self.name}: not started")
        return self._port

    @property
    def url(self) -> str:
        """The pyserial / pymodbus port string of this line."""
        return f"socket://{self.host}:{self.port}"

    @property
    def connection_count(self) -> int:
        """Live client connections."""
        return len(self._connections)

    # -------------------------------------------------------------- faults
    def line_down(self) -> bool:
        """True while any slave on the line has its `disconnect` fault set (a yanked cable / adapter)."""
        return any(s.faults.disconnect for s in self._slaves.values())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(_DISCONNECT_POLL_S)
            if self.line_down():
                for writer in list(self._connections.values()):
                    writer.close()

    # ---------------------------------------------------------- connection
    def _gap_s(self) -> float:
        return max(self.timing.gap_s(), _MIN_GAP_S)

    def _resync_s(self) -> float:
        return max(self.timing.gap_s(), _MIN_RESYNC_S)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._closing or task is None:
            writer.close()
            return
        if self.line_down():
            self.connections_refused += 1
            writer.close()
            return
        self._connections[task] = writer
        self.connections_accepted += 1
        buf = bytearray()
        try:
            while not self._closing:
                frame = await self._read_frame(reader, buf)
                if frame is None or self.line_down():
                    return
                self.requests_seen += 1
                await self._transact(frame, writer, buf)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only `close()` cancels a connection; end it quietly (Python 3.11's stream callback would log a
            # cancelled client_connected_cb task as an error).
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 0.5)

    async def _read_frame(self, reader: asyncio.StreamReader, buf: bytearray) -> bytes | None:
        """The next request frame from the byte stream, or None at end of stream."""
        while True:
            need = rtu_frame_length(buf)
            if need is not None and len(buf) >= need:
                frame = bytes(buf[:need])
                del buf[:need]
                return frame
            if need is None or len(buf) > 0:
                timeout: float | None = self._gap_s() if need is None else self._resync_s()
            else:
                timeout = None
            try:
                data = await asyncio.wait_for(reader.read(4096), timeout)
            except TimeoutError:
                if need is None:  # unknown length: the silent gap ends the frame
                    frame = bytes(buf)
                    buf.clear()
                    return frame
                buf.clear()  # a partial frame followed by silence is noise
                continue
            if not data:
                return None
            buf += data

    def _respond(self, frame: bytes) -> tuple[bytes | None, RtuSlave | None]:
        """The reply frame to one request (None = silence) and the slave that owns it."""
        if not crc_ok(frame):
            return None, None
        unit = frame[0]
        pdu = frame[1:-2]
        if unit == _BROADCAST_ID:
            if pdu[0] in (FC_WRITE_SINGLE, FC_WRITE_MULTIPLE):
                for listener in self._slaves.values():
                    if not listener.faults.no_reply:
                        handle_pdu(listener, pdu)
            return None, None
        slave = self._slaves.get(unit)
        if slave is None or slave.faults.no_reply:
            return None, slave
        if slave.faults.modbus_exception:
            reply_pdu = _exception(pdu[0], slave.faults.modbus_exception & 0xFF)
        else:
            reply_pdu = handle_pdu(slave, pdu)
            if _covers(pdu, slave.faults.lost_reply_register):
                return None, slave  # executed, and the reply is lost on the way back
        reply = with_crc(bytes([unit]) + reply_pdu)
        if slave.faults.corrupt:
            corrupted = bytearray(reply)
            corrupted[-3] ^= 0xFF  # last byte before the CRC: wrong data, and the CRC no longer matches
            reply = bytes(corrupted)
        return reply, slave

    async def _transact(self, frame: bytes, writer: asyncio.StreamWriter, buf: bytearray) -> None:
        loop = asyncio.get_running_loop()
        async with self._lock:  # one transaction at a time on the half-duplex bus
            t0 = loop.time()
            if not crc_ok(frame):
                buf.clear()  # a receiver that saw garbage waits for the next silent gap
            reply, slave = self._respond(frame)
            if reply is None or slave is None:
                wait_s = self.timing.frame_s(len(frame)) + self.timing.gap_s()
            else:
                # the reply's last byte is on the wire after request, turnaround gap, delay and reply; the
                # silent gap that follows it keeps the line busy (lock held) but does not delay the reply
                wait_s = (
                    self.timing.rtu_exchange_s(len(frame), len(reply), slave.response_delay_s())
                    - self.timing.gap_s()
                    + slave.faults.delay_s
                )
            remaining = wait_s - (loop.time() - t0)
            if remaining > 0:
                await asyncio.sleep(remaining)
            if reply is None or self.line_down() or self._closing:
                return
            writer.write(reply)
            await writer.drain()
            if (gap_s := self.timing.gap_s()) > 0:
                await asyncio.sleep(gap_s)  # t3.5 of silence after the reply before the next frame on the line
