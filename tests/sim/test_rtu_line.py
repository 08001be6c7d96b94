"""The simulated RS-485 Modbus RTU line on a real TCP socket: framing, exceptions, silence, faults, timing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from hardware_sim import LineTiming
from hardware_sim.crc16 import crc16_modbus, crc_ok, with_crc
from hardware_sim.faults import MODBUS_FAULTS, Faults
from hardware_sim.leadshine_drive import LeadshineDrive
from hardware_sim.loadcell_transmitter import LoadCellTransmitter
from hardware_sim.rtu_line import ModbusError, RtuLineServer, rtu_frame_length
from tests.sim.rtu_client import (
    RawRtu,
    crc16,
    frame,
    hexframe,
    int32,
    pin_force,
    quiet_model,
    read_reply_len,
    read_req,
    registers,
    words,
    write1_req,
    writen_req,
)

DEVICES_MD_FRAMES = [
    "01 03 00 08 00 01 05 C8",
    "01 03 02 08 02 3E 45",
    "01 03 00 50 00 02 C4 1A",
    "01 03 04 00 00 00 84 FA 50",
    "01 03 00 1E 00 02 A4 0D",
    "01 03 04 00 00 01 62 7A 4A",
    "01 10 00 05 00 01 02 5A A5 5C DE",
    "01 10 00 54 00 02 04 00 00 00 64 F6 8B",
]


class DictSlave:
    """A plain register-bank slave: registers 0..9 mapped, values above 1000 refused."""

    def __init__(self, slave_id: int = 1, delay_ms: float = 0.0) -> None:
        self.slave_id = slave_id
        self.faults = Faults(supported=MODBUS_FAULTS)
        self.regs = {a: 100 + a for a in range(10)}
        self.delay_ms = delay_ms
        self.writes: list[tuple[int, list[int]]] = []

    def response_delay_s(self) -> float:
        """Configured turnaround."""
        return self.delay_ms / 1000

    def read_registers(self, address: int, count: int) -> list[int]:
        """Mapped registers or exception 02."""
        if any(a not in self.regs for a in range(address, address + count)):
            raise ModbusError(2)
        return [self.regs[a] for a in range(address, address + count)]

    def write_registers(self, address: int, values: Sequence[int]) -> None:
        """Write mapped registers; 02 for unmapped, 03 for values above 1000."""
        if any(a not in self.regs for a in range(address, address + len(values))):
            raise ModbusError(2)
        if any(v > 1000 for v in values):
            raise ModbusError(3)
        self.writes.append((address, list(values)))
        for i, v in enumerate(values):
            self.regs[address + i] = v


@pytest.fixture
async def line() -> AsyncIterator[tuple[RtuLineServer, DictSlave, RawRtu]]:
    slave = DictSlave()
    server = RtuLineServer(slaves=[slave], timing=LineTiming(enabled=False))
    port = await server.start()
    client = await RawRtu.open(port)
    yield server, slave, client
    await client.close()
    await server.close()


# ----------------------------------------------------------------- CRC and framing


@pytest.mark.parametrize("text", DEVICES_MD_FRAMES)
def test_sim_crc_matches_devices_md_vectors(text: str) -> None:
    raw = hexframe(text)
    assert crc_ok(raw)
    assert with_crc(raw[:-2]) == raw
    assert crc16_modbus(raw[:-2]) == crc16(raw[:-2])


def test_sim_crc_rejects_a_flipped_byte() -> None:
    raw = bytearray(hexframe(DEVICES_MD_FRAMES[0]))
    raw[3] ^= 0x01
    assert not crc_ok(bytes(raw))


def test_frame_length_from_function_code() -> None:
    assert rtu_frame_length(b"") == 2
    assert rtu_frame_length(b"\x01\x03") == 8
    assert rtu_frame_length(b"\x01\x06\x00") == 8
    assert rtu_frame_length(b"\x01\x10\x00\x54") == 7  # header still incomplete
    assert rtu_frame_length(hexframe(DEVICES_MD_FRAMES[7])) == 13
    assert rtu_frame_length(b"\x01\x2b\x0e") is None  # unknown length: the silent gap ends it


# ------------------------------------------------------------------- messages


async def test_fc03_fc06_fc16_replies_are_byte_exact(line: tuple[RtuLineServer, DictSlave, RawRtu]) -> None:
    _, slave, client = line
    assert await client.ask(read_req(1, 2, 3), read_reply_len(3)) == frame(bytes.fromhex("01 03 06 00 66 00 67 00 68"))
    req = write1_req(1, 4, 0x01F4)
    assert await client.ask(req, 8) == req  # FC06 echoes the request
    req16 = writen_req(1, 5, [7, 8])
    assert await client.ask(req16, 8) == frame(bytes.fromhex("01 10 00 05 00 02"))
    assert slave.writes == [(4, [0x01F4]), (5, [7, 8])]
    assert registers(await client.ask(read_req(1, 4, 3), read_reply_len(3))) == [0x01F4, 7, 8]


async def test_illegal_function_gets_exception_01(line: tuple[RtuLineServer, DictSlave, RawRtu]) -> None:
    _, _, client = line
    fc04 = frame(bytes.fromhex("01 04 00 00 00 01"))
    assert await client.ask(fc04, 5) == frame(bytes.fromhex("01 84 01"))
    # a function of unknown length is framed by the silent gap, then refused the same way
    fc43 = frame(bytes.fromhex("01 2B 0E 01 00"))
    assert await client.ask(fc43, 5) == frame(bytes.fromhex("01 AB 01"))


async def test_illegal_address_and_value_get_exceptions_02_03(line: tuple[RtuLineServer, DictSlave, RawRtu]) -> None:
    _, slave, client = line
    assert await client.ask(read_req(1, 0x0100, 1), 5) == frame(bytes.fromhex("01 83 02"))
    assert await client.ask(read_req(1, 8, 5), 5) == frame(bytes.fromhex("01 83 02"))  # runs past the map
    assert await client.ask(read_req(1, 0, 0), 5) == frame(bytes.fromhex("01 83 03"))
    assert await client.ask(read_req(1, 0, 126), 5) == frame(bytes.fromhex("01 83 03"))
    assert await client.ask(write1_req(1, 3, 5000), 5) == frame(bytes.fromhex("01 86 03"))
    bad_count = frame(bytes.fromhex("01 10 00 00 00 02 02 00 01"))  # byte count does not match 2 registers
    assert await client.ask(bad_count, 5) == frame(bytes.fromhex("01 90 03"))
    assert slave.writes == []


async def test_bad_crc_gets_silence_then_the_line_recovers(line: tuple[RtuLineServer, DictSlave, RawRtu]) -> None:
    server, slave, client = line
    bad = bytearray(read_req(1, 0, 1))
    bad[-1] ^= 0xFF
    assert await client.silent(bytes(bad)) == b""
    bad_write = bytearray(write1_req(1, 0, 7))
    bad_write[5] ^= 0x01
    assert await client.silent(bytes(bad_write)) == b""
    assert slave.writes == []
    assert registers(await client.ask(read_req(1, 0, 1), 7)) == [100]
    assert server.requests_seen == 3


async def test_unknown_slave_id_gets_silence(line: tuple[RtuLineServer, DictSlave, RawRtu]) -> None:
    _, slave, client = line
    assert await client.silent(read_req(7, 0, 1)) == b""
    assert await client.silent(write1_req(7, 0, 1)) == b""
    assert slave.writes == []
    assert registers(await client.ask(read_req(1, 0, 1), 7)) == [100]


async def test_partial_frame_then_silence_is_discarded(line: tuple[RtuLineServer, DictSlave, RawRtu]) -> None:
    _, _, client = line
    assert await client.silent(read_req(1, 0, 1)[:5], wait_s=0.3) == b""
    assert registers(await client.ask(read_req(1, 1, 1), 7)) == [101]


async def test_two_requests_in_one_segment_get_two_replies(line: tuple[RtuLineServer, DictSlave, RawRtu]) -> None:
    _, _, client = line
    await client.send(read_req(1, 0, 1) + writen_req(1, 1, [9]))
    got = await asyncio.wait_for(client.reader.readexactly(7 + 8), 2.0)
    assert got == frame(bytes.fromhex("01 03 02 00 64")) + frame(bytes.fromhex("01 10 00 01 00 01"))


async def test_broadcast_write_is_executed_by_all_and_answered_by_none() -> None:
    a, b = DictSlave(1), DictSlave(3)
    async with RtuLineServer(slaves=[a, b], timing=LineTiming(enabled=False)) as server:
        client = await RawRtu.open(server.port)
        try:
            assert await client.silent(write1_req(0, 2, 55)) == b""
            assert a.regs[2] == b.regs[2] == 55
            assert await client.silent(read_req(0, 2, 1)) == b""  # broadcast reads are meaningless: silence
        finally:
            await client.close()


def test_duplicate_or_invalid_slave_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="already"):
        RtuLineServer(slaves=[DictSlave(1), DictSlave(1)])
    with pytest.raises(ValueError, match=r"1\.\.247"):
        RtuLineServer(slaves=[DictSlave(0)])


# --------------------------------------------------------------------- faults


async def test_fault_no_reply(line: tuple[RtuLineServer, DictSlave, RawRtu]) -> None:
    _, slave, client = line
    slave.faults.set(no_reply=True)
    assert await client.silent(read_req(1, 0, 1)) == b""
    slave.faults.clear()
    assert registers(await client.ask(read_req(1, 0, 1), 7)) == [100]


async def test_fault_delay(line: tuple[RtuLineServer, DictSlave, RawRtu]) -> None:
    _, slave, client = line
    slave.faults.set(delay_s=0.3)
    t0 = time.monotonic()
    assert await client.silent(read_req(1, 0, 1), wait_s=0.15) == b""  # not yet
    rest = await asyncio.wait_for(client.reader.readexactly(7), 2.0)
    assert time.monotonic() - t0 >= 0.29
    assert registers(rest) == [100]


async def test_fault_corrupt_breaks_the_crc(line: tuple[RtuLineServer, DictSlave, RawRtu]) -> None:
    _, slave, client = line
    slave.faults.set(corrupt=True)
    reply = await client.ask(read_req(1, 0, 1), 7)
    good = frame(bytes.fromhex("01 03 02 00 64"))
    assert len(reply) == len(good) and reply != good
    assert crc16(reply[:-2]) != int.from_bytes(reply[-2:], "little")


async def test_fault_modbus_exception(line: tuple[RtuLineServer, DictSlave, RawRtu]) -> None:
    _, slave, client = line
    slave.faults.set(modbus_exception=6)
    assert await client.ask(read_req(1, 0, 1), 5) == frame(bytes.fromhex("01 83 06"))
    assert await client.ask(write1_req(1, 0, 1), 5) == frame(bytes.fromhex("01 86 06"))
    assert slave.writes == []


async def test_fault_disconnect_drops_and_refuses_connections(line: tuple[RtuLineServer, DictSlave, RawRtu]) -> None:
    server, slave, client = line
    assert registers(await client.ask(read_req(1, 0, 1), 7)) == [100]
    slave.faults.set(disconnect=True)
    assert await asyncio.wait_for(client.reader.read(100), 2.0) == b""  # the live connection is closed
    refused = await RawRtu.open(server.port)
    try:
        assert await asyncio.wait_for(refused.reader.read(100), 2.0) == b""  # new ones are closed at once
    finally:
        await refused.close()
    assert server.connections_refused >= 1
    slave.faults.clear()
    again = await RawRtu.open(server.port)
    try:
        assert registers(await again.ask(read_req(1, 0, 1), 7)) == [100]
    finally:
        await again.close()


async def test_close_drops_live_connections() -> None:
    server = RtuLineServer(slaves=[DictSlave()], timing=LineTiming(enabled=False))
    client = await RawRtu.open(await server.start())
    try:
        assert registers(await client.ask(read_req(1, 0, 1), 7)) == [100]
        await server.close()
        assert await asyncio.wait_for(client.reader.read(100), 2.0) == b""
        assert server.connection_count == 0
    finally:
        await client.close()


# --------------------------------------------------------------------- timing


def _wire_s(timing: LineTiming, count: int) -> float:
    return timing.rtu_exchange_s(8, read_reply_len(count))


async def _timed_reads(port: int, n: int) -> float:
    client = await RawRtu.open(port)
    try:
        t0 = time.monotonic()
        for _ in range(n):
            await client.ask(read_req(1, 0, 2), read_reply_len(2))
        return (time.monotonic() - t0) / n
    finally:
        await client.close()


async def test_line_timing_on_costs_wire_time_and_off_is_fast() -> None:
    timing = LineTiming(baudrate=9600)
    expected_s = _wire_s(timing, 2)  # 17 bytes at 9600 baud + two 3.5-char gaps, about 25 ms
    assert expected_s > 0.02
    async with RtuLineServer(slaves=[DictSlave()], timing=timing) as server:
        on_s = await _timed_reads(server.port, 4)
        timing.enabled = False
        off_s = await _timed_reads(server.port, 4)
    print(f"9600 baud FC03x2: {on_s * 1e3:.1f} ms/read (wire {expected_s * 1e3:.1f} ms), instant {off_s * 1e3:.2f} ms")
    assert on_s >= 0.95 * expected_s
    assert off_s < on_s / 2


async def test_response_delay_is_part_of_the_exchange() -> None:
    slave = DictSlave(delay_ms=100)
    async with RtuLineServer(slaves=[slave], timing=LineTiming(enabled=False)) as server:
        assert await _timed_reads(server.port, 1) >= 0.095


async def test_line_is_half_duplex_across_connections() -> None:
    """Two clients on one line: their transactions take turns, so together they take twice the wire time.

    The second reply ends one silent gap before the second exchange does (the gap after it is idle line).
    """
    timing = LineTiming(baudrate=9600)
    expected_s = _wire_s(timing, 2)
    async with RtuLineServer(slaves=[DictSlave(1), DictSlave(2)], timing=timing) as server:
        a, b = await RawRtu.open(server.port), await RawRtu.open(server.port)
        try:
            t0 = time.monotonic()
            ra, rb = await asyncio.gather(
                a.ask(read_req(1, 0, 2), read_reply_len(2)), b.ask(read_req(2, 0, 2), read_reply_len(2))
            )
            elapsed = time.monotonic() - t0
        finally:
            await a.close()
            await b.close()
    assert registers(ra) == registers(rb) == [100, 101]
    assert elapsed >= 0.95 * (2 * expected_s - timing.gap_s())  # in parallel it would be one exchange


# ---------------------------------------------------------- multi-drop devices


async def test_multidrop_load_cell_and_stepper_on_one_line() -> None:
    model, clock = quiet_model()
    loadcell = LoadCellTransmitter(model, slave_id=1, decimals=2)
    drive = LeadshineDrive(model, slave_id=2)
    pin_force(model, 12.34)
    clock.advance(5.0)
    async with RtuLineServer(slaves=[loadcell, drive], timing=LineTiming(baudrate=115200)) as server:
        client = await RawRtu.open(server.port)
        try:
            gross = registers(await client.ask(read_req(1, 0x0050, 2), read_reply_len(2)))
            assert int32(*gross) == 1234
            # the stepper answers its own id on the same bytes stream, and moves the shared model's axis
            move = writen_req(2, 0x6200, [0x0041, *words(800), 300])
            assert await client.ask(move, 8) == frame(bytes.fromhex("02 10 62 00 00 04"))
            assert await client.ask(write1_req(2, 0x6002, 0x0010), 8) == write1_req(2, 0x6002, 0x0010)
            clock.advance(5.0)
            position = registers(await client.ask(read_req(2, 0x602C, 2), read_reply_len(2)))
            assert int32(*position) == 800 == model.axis.counter_pulses
            # the load cell does not answer stepper registers, and neither answers id 3
            assert await client.ask(read_req(1, 0x602C, 2), 5) == frame(bytes.fromhex("01 83 02"))
            assert await client.silent(read_req(3, 0x0050, 2)) == b""
            # a stepper fault leaves the load cell on the same line alone
            drive.faults.set(no_reply=True)
            assert await client.silent(read_req(2, 0x602C, 2)) == b""
            assert int32(*registers(await client.ask(read_req(1, 0x0050, 2), read_reply_len(2)))) == 1234
        finally:
            await client.close()


async def test_each_device_on_its_own_line() -> None:
    model, clock = quiet_model()
    pin_force(model, 5.0)
    clock.advance(2.0)
    loadcell = LoadCellTransmitter(model, slave_id=1, decimals=3)
    drive = LeadshineDrive(model, slave_id=1)  # the same id is fine on another line
    async with (
        RtuLineServer(slaves=[loadcell], timing=LineTiming(enabled=False)) as lc_line,
        RtuLineServer(slaves=[drive], timing=LineTiming(enabled=False)) as drive_line,
    ):
        assert lc_line.url != drive_line.url and lc_line.url.startswith("socket://127.0.0.1:")
        a, b = await RawRtu.open(lc_line.port), await RawRtu.open(drive_line.port)
        try:
            assert int32(*registers(await a.ask(read_req(1, 0x0050, 2), 9))) == 5000
            assert registers(await b.ask(read_req(1, 0x1003, 1), 7))[0] & 0x02  # enabled
        finally:
            await a.close()
            await b.close()
