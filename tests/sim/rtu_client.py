"""Test helpers for the simulated RTU line: an independent CRC, frame builders and a raw TCP client.

The CRC here is written separately from `hardware_sim.crc16` on purpose (a shared bug would hide itself); both
are checked against the CRC vectors of devices.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

from hardware_sim import ManualClock, RigModel, SimParams
from hardware_sim.params import LoadCellSensorParams


def crc16(data: bytes) -> int:
    """CRC-16/MODBUS bit by bit: reflected polynomial 0xA001, initial value 0xFFFF."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(body: bytes) -> bytes:
    """`body` with its CRC appended, low byte first."""
    return body + struct.pack("<H", crc16(body))


def hexframe(text: str) -> bytes:
    """Bytes from hex text such as '01 03 00 08 00 01 05 C8'."""
    return bytes.fromhex(text)


def read_req(unit: int, address: int, count: int) -> bytes:
    """An FC03 request."""
    return frame(struct.pack(">BBHH", unit, 3, address, count))


def write1_req(unit: int, address: int, value: int) -> bytes:
    """An FC06 request."""
    return frame(struct.pack(">BBHH", unit, 6, address, value))


def writen_req(unit: int, address: int, values: list[int]) -> bytes:
    """An FC16 request."""
    return frame(struct.pack(f">BBHHB{len(values)}H", unit, 16, address, len(values), 2 * len(values), *values))


def read_reply_len(count: int) -> int:
    """Bytes of an FC03 reply carrying `count` registers."""
    return 5 + 2 * count


def registers(reply: bytes) -> list[int]:
    """The registers of an FC03 reply (CRC checked)."""
    assert crc16(reply[:-2]) == struct.unpack("<H", reply[-2:])[0], f"bad CRC in {reply.hex(' ')}"
    assert reply[1] == 3, f"not an FC03 reply: {reply.hex(' ')}"
    n = reply[2] // 2
    return list(struct.unpack(f">{n}H", reply[3 : 3 + 2 * n]))


def int32(high: int, low: int) -> int:
    """Signed int32 from two registers, high word first."""
    return int(struct.unpack(">i", struct.pack(">HH", high, low))[0])


def words(value: int) -> list[int]:
    """Two registers (high word first) for a signed int32."""
    return list(struct.unpack(">HH", struct.pack(">i", value)))


def quiet_model(**mechanics: float) -> tuple[RigModel, ManualClock]:
    """A model on a manual clock whose load cell has no noise, drift or warm-up (exact numbers on the wire)."""
    clock = ManualClock()
    base = SimParams()
    params = SimParams(
        loadcell_sensor=LoadCellSensorParams(noise_n=0.0, drift_n_per_sqrt_s=0.0, warmup_drift_n=0.0),
        mechanics=base.mechanics.model_copy(update=mechanics),
    )
    return RigModel(params, clock=clock), clock


def pin_force(model: RigModel, force_n: float) -> None:
    """Make the model's true force exactly `force_n` (an ideal press)."""
    model.pin_pressure_kpa = force_n / model.area_m2 / 1e3
    model.advance()


class RawRtu:
    """A raw TCP client standing in for a serial port on the RTU line."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> RawRtu:
        """Connect to the line."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        """Put bytes on the line."""
        self.writer.write(data)
        await self.writer.drain()

    async def ask(self, request: bytes, reply_len: int, timeout_s: float = 2.0) -> bytes:
        """Send a request and read exactly `reply_len` bytes, then check nothing else follows at once."""
        await self.send(request)
        reply = await asyncio.wait_for(self.reader.readexactly(reply_len), timeout_s)
        return reply

    async def listen(self, wait_s: float = 0.2) -> bytes:
        """Whatever arrives within `wait_s` (b'' for silence)."""
        try:
            return await asyncio.wait_for(self.reader.read(1024), wait_s)
        except TimeoutError:
            return b""

    async def silent(self, request: bytes, wait_s: float = 0.2) -> bytes:
        """Send a request and return what arrives within `wait_s` (b'' for silence)."""
        await self.send(request)
        return await self.listen(wait_s)

    async def close(self) -> None:
        """Close the client side."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
