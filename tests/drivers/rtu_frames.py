"""Test helpers for the Modbus RTU drivers: an independent CRC, frame builders and strict TCP peers.

The CRC here is written separately from `drivers.modbus_bus.crc16_modbus` on purpose (a shared bug would hide
itself), and is itself checked against the CRC vectors of devices.md in test_modbus_bus.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS bit by bit: reflected polynomial 0xA001, initial value 0xFFFF."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def rtu(hex_without_crc: str) -> bytes:
    """Frame from hex text, with the CRC appended low byte first."""
    body = bytes.fromhex(hex_without_crc)
    return body + struct.pack("<H", crc16(body))


def read_request(device_id: int, address: int, count: int) -> bytes:
    """An FC03 request frame."""
    return rtu(struct.pack(">BBHH", device_id, 3, address, count).hex())


def read_reply(device_id: int, *registers: int) -> bytes:
    """An FC03 reply frame carrying `registers`."""
    body = struct.pack(f">BBB{len(registers)}H", device_id, 3, 2 * len(registers), *registers)
    return rtu(body.hex())


def write_single(device_id: int, address: int, value: int) -> tuple[bytes, bytes]:
    """An FC06 request and its echo reply."""
    frame = rtu(struct.pack(">BBHH", device_id, 6, address, value).hex())
    return frame, frame


def write_multiple(device_id: int, address: int, *values: int) -> tuple[bytes, bytes]:
    """An FC16 request and its normal reply."""
    n = len(values)
    request = rtu(struct.pack(f">BBHHB{n}H", device_id, 0x10, address, n, 2 * n, *values).hex())
    reply = rtu(struct.pack(">BBHH", device_id, 0x10, address, n).hex())
    return request, reply


class StepClock:
    """A clock returning 100.0, 101.0, 102.0, ... on successive calls."""

    def __init__(self, start: float = 100.0) -> None:
        self.t = start - 1.0

    def now(self) -> float:
        """Return the next tick."""
        self.t += 1.0
        return self.t


@dataclass
class HalfDuplexPeer:
    """What the strict peer saw: requests in order, with arrival and reply times (event-loop clock)."""

    serial_url: str = ""
    requests: list[bytes] = field(default_factory=list)
    request_at: list[float] = field(default_factory=list)
    reply_at: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def half_duplex_peer(
    answer: Callable[[bytes], bytes | None],
    *,
    n_requests: int,
    request_len: int = 8,
    hold_s: float = 0.0,
) -> AsyncIterator[HalfDuplexPeer]:
    """Serve one connection like a half-duplex RS-485 line: any byte sent while a request is pending fails."""
    peer = HalfDuplexPeer()
    finished = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for i in range(n_requests):
                try:
                    request = await asyncio.wait_for(reader.readexactly(request_len), 5.0)
                except (TimeoutError, asyncio.IncompleteReadError) as exc:
                    peer.errors.append(f"request {i} never arrived: {exc!r}")
                    return
                peer.requests.append(request)
                peer.request_at.append(loop.time())
                if hold_s > 0:
                    with contextlib.suppress(TimeoutError):
                        early = await asyncio.wait_for(reader.read(256), hold_s)
                        what = early.hex(" ") if early else "the connection closed"
                        peer.errors.append(f"while request {i} was pending: {what}")
                        return
                reply = answer(request)
                if reply:
                    writer.write(reply)
                    await writer.drain()
                peer.reply_at.append(loop.time())
        finally:
            finished.set()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    peer.serial_url = f"socket://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield peer
        await asyncio.wait_for(finished.wait(), 10.0)
    finally:
        server.close()
        await server.wait_closed()
    assert not peer.errors, "\n".join(peer.errors)
