"""ModbusBus: byte-exact RTU framing, error mapping, retries, timing, sharing and reconnection."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from drivers.errors import DeviceDisconnected, DeviceExceptionReply, DeviceProtocolError, DeviceTimeout
from drivers.modbus_bus import ModbusBus, crc16_modbus, int32_from_words, int32_to_words
from tests.drivers.rtu_frames import (
    crc16,
    half_duplex_peer,
    read_reply,
    read_request,
    rtu,
    write_multiple,
    write_single,
)
from tests.support.expected_protocol import expected_protocol

H = bytes.fromhex

# devices.md §1, CRC-16/MODBUS low byte first.
STATUS_REQUEST = H("01 03 00 08 00 01 05 C8")
STATUS_REPLY = H("01 03 02 08 02 3E 45")
WEIGHT_REQUEST = H("01 03 00 50 00 02 C4 1A")
WEIGHT_REPLY = H("01 03 04 00 00 00 84 FA 50")
MEASURED_REQUEST = H("01 03 00 1E 00 02 A4 0D")
MEASURED_REPLY = H("01 03 04 00 00 01 62 7A 4A")
UNLOCK_REQUEST = H("01 10 00 05 00 01 02 5A A5 5C DE")
TARE_100_REQUEST = H("01 10 00 54 00 02 04 00 00 00 64 F6 8B")
EXCEPTION_2_REPLY = H("01 83 02 C0 F1")

DEVICE = "test cell"

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def make_bus(url: str, **overrides: object) -> ModbusBus:
    options: dict[str, object] = {"baudrate": 9600, "timeout_s": 0.3, "retries": 0, "name": "bus0"}
    options.update(overrides)
    return ModbusBus(port=url, **options)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------- CRC


@pytest.mark.parametrize(
    "frame",
    [
        STATUS_REQUEST,
        STATUS_REPLY,
        WEIGHT_REQUEST,
        WEIGHT_REPLY,
        MEASURED_REQUEST,
        MEASURED_REPLY,
        UNLOCK_REQUEST,
        TARE_100_REQUEST,
        EXCEPTION_2_REPLY,
    ],
)
def test_test_crc_reproduces_devices_md_vectors(frame: bytes) -> None:
    assert rtu(frame[:-2].hex()) == frame


@pytest.mark.parametrize("body", [b"", b"\x00", b"\xff" * 7, bytes(range(256)), STATUS_REQUEST[:-2]])
def test_driver_crc_agrees_with_independent_crc(body: bytes) -> None:
    assert crc16_modbus(body) == crc16(body)


def test_int32_words_high_word_first_and_signed() -> None:
    assert int32_from_words(0x0000, 0x0084) == 132
    assert int32_from_words(0xFFFF, 0xFF7C) == -132
    assert int32_from_words(0x8000, 0x0000) == -(2**31)
    assert int32_from_words(0x7FFF, 0xFFFF) == 2**31 - 1
    assert int32_to_words(100) == (0x0000, 0x0064)
    assert int32_to_words(-1) == (0xFFFF, 0xFFFF)
    assert int32_to_words(0x12345678) == (0x1234, 0x5678)
    with pytest.raises(ValueError, match="32-bit"):
        int32_to_words(2**31)


@pytest.mark.parametrize(
    ("baudrate", "gap_s"),
    [
        (1200, 3.5 * 11 / 1200),
        (9600, 0.0040104),
        (19200, 3.5 * 11 / 19200),
        (38400, 0.00175),
        (115200, 0.00175),
    ],
)
def test_silent_gap_is_three_and_a_half_characters(baudrate: int, gap_s: float) -> None:
    bus = ModbusBus(port="socket://127.0.0.1:1", baudrate=baudrate)
    assert bus.silent_gap_s == pytest.approx(gap_s, rel=1e-4)


# --------------------------------------------------------------------------------------- byte-exact


async def test_read_status_vector() -> None:
    async with expected_protocol([(STATUS_REQUEST, STATUS_REPLY)]) as peer, make_bus(peer.serial_url) as bus:
        registers = await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word")
    assert registers == [0x0802]


async def test_read_weight_vector_gives_raw_132() -> None:
    async with expected_protocol([(WEIGHT_REQUEST, WEIGHT_REPLY)]) as peer, make_bus(peer.serial_url) as bus:
        registers = await bus.read_holding(DEVICE, 1, 0x0050, 2, what="gross weight")
    assert registers == [0x0000, 0x0084]
    assert int32_from_words(*registers) == 132


async def test_read_measured_value_vector_gives_354() -> None:
    async with (
        expected_protocol([(MEASURED_REQUEST, MEASURED_REPLY)]) as peer,
        make_bus(peer.serial_url) as bus,
    ):
        registers = await bus.read_holding(DEVICE, 1, 0x001E, 2, what="measured value")
    assert int32_from_words(*registers) == 354


async def test_unlock_vector_is_fc16() -> None:
    reply = rtu("01 10 00 05 00 01")
    async with expected_protocol([(UNLOCK_REQUEST, reply)]) as peer, make_bus(peer.serial_url) as bus:
        await bus.write_registers(DEVICE, 1, 0x0005, [0x5AA5], what="unlock")
    assert peer.received == [UNLOCK_REQUEST]


async def test_write_tare_100_vector() -> None:
    reply = rtu("01 10 00 54 00 02")
    async with expected_protocol([(TARE_100_REQUEST, reply)]) as peer, make_bus(peer.serial_url) as bus:
        await bus.write_registers(DEVICE, 1, 0x0054, list(int32_to_words(100)), what="tare")
    assert peer.received == [TARE_100_REQUEST]


async def test_write_register_is_fc06_and_checks_the_echo() -> None:
    request, echo = write_single(2, 0x6002, 0x0040)
    assert request == H("02 06 60 02 00 40") + request[-2:]
    async with expected_protocol([(request, echo)]) as peer, make_bus(peer.serial_url) as bus:
        await bus.write_register("press", 2, 0x6002, 0x0040, what="stop")
    assert peer.received == [request]


# ------------------------------------------------------------------------------------ error mapping


async def test_bad_crc_is_a_protocol_error_at_once_not_a_number() -> None:
    bad = STATUS_REPLY[:-1] + b"\x46"
    async with (
        expected_protocol([(STATUS_REQUEST, bad)]) as peer,
        make_bus(peer.serial_url, timeout_s=1.0) as bus,
    ):
        start = time.monotonic()
        with pytest.raises(DeviceProtocolError) as caught:
            await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word")
        elapsed = time.monotonic() - start
    message = str(caught.value)
    assert elapsed < 0.5, "a bad CRC must be reported when the frame is complete, not after the timeout"
    assert DEVICE in message and "FC03" in message and "0x0008" in message
    assert "bad CRC" in message and "01 03 02 08 02 3E 46" in message


async def test_bad_crc_is_retried_then_the_good_reply_is_used() -> None:
    bad = STATUS_REPLY[:-1] + b"\x00"
    script = [(STATUS_REQUEST, bad), (STATUS_REQUEST, STATUS_REPLY)]
    async with expected_protocol(script) as peer, make_bus(peer.serial_url, retries=1) as bus:
        assert await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word") == [0x0802]


async def test_retries_are_bounded() -> None:
    bad = STATUS_REPLY[:-1] + b"\x00"
    script = [(STATUS_REQUEST, bad)] * 3
    async with (
        expected_protocol(script, check_extra_s=0.3) as peer,
        make_bus(peer.serial_url, retries=2) as bus,
    ):
        with pytest.raises(DeviceProtocolError):
            await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word")
    assert len(peer.received) == 3


async def test_exception_reply_names_code_and_register_and_is_not_retried() -> None:
    script = [(STATUS_REQUEST, EXCEPTION_2_REPLY)]
    async with (
        expected_protocol(script, check_extra_s=0.3) as peer,
        make_bus(peer.serial_url, retries=2) as bus,
    ):
        with pytest.raises(DeviceExceptionReply) as caught:
            await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word")
    assert caught.value.code == 2
    message = str(caught.value)
    assert "0x0008" in message and "illegal data address" in message and "01 83 02 C0 F1" in message


async def test_silence_is_a_timeout_within_the_timeout() -> None:
    timeout_s = 0.2
    async with (
        expected_protocol([(STATUS_REQUEST, None)], check_extra_s=0.6) as peer,
        make_bus(peer.serial_url, timeout_s=timeout_s) as bus,
    ):
        start = time.monotonic()
        with pytest.raises(DeviceTimeout) as caught:
            await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word")
        elapsed = time.monotonic() - start
    wire_s = bus.wire_time_s(len(STATUS_REQUEST) + len(STATUS_REPLY))
    assert timeout_s <= elapsed < timeout_s + wire_s + 0.15
    message = str(caught.value)
    assert "no reply" in message and "0x0008" in message and DEVICE in message


async def test_partial_reply_is_a_timeout_naming_the_bytes() -> None:
    async with (
        expected_protocol([(STATUS_REQUEST, STATUS_REPLY[:4])], check_extra_s=0.5) as peer,
        make_bus(peer.serial_url, timeout_s=0.15) as bus,
    ):
        with pytest.raises(DeviceTimeout, match=r"incomplete reply.*01 03 02 08"):
            await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word")


async def test_reply_from_another_slave_is_garbled() -> None:
    other = read_reply(2, 0x0802)
    async with expected_protocol([(STATUS_REQUEST, other)]) as peer, make_bus(peer.serial_url) as bus:
        with pytest.raises(DeviceProtocolError, match=r"garbled reply.*slave 1"):
            await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word")


async def test_wrong_byte_count_is_a_protocol_error() -> None:
    async with expected_protocol([(STATUS_REQUEST, WEIGHT_REPLY)]) as peer, make_bus(peer.serial_url) as bus:
        with pytest.raises(DeviceProtocolError, match="byte count 4, expected 2"):
            await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word")


async def test_fc06_echo_mismatch_is_a_protocol_error() -> None:
    request, _ = write_single(2, 0x6002, 0x0010)
    _, wrong_echo = write_single(2, 0x6002, 0x0040)
    async with expected_protocol([(request, wrong_echo)]) as peer, make_bus(peer.serial_url) as bus:
        with pytest.raises(DeviceProtocolError, match="echo differs"):
            await bus.write_register("press", 2, 0x6002, 0x0010, what="run PR0")


async def test_writes_are_not_retried_unless_idempotent() -> None:
    request, _ = write_single(2, 0x6002, 0x0010)
    async with (
        expected_protocol([(request, None)], check_extra_s=0.5) as peer,
        make_bus(peer.serial_url, retries=2, timeout_s=0.1) as bus,
    ):
        with pytest.raises(DeviceTimeout):
            await bus.write_register("press", 2, 0x6002, 0x0010, what="run PR0")
    assert peer.received == [request]


async def test_idempotent_writes_are_retried() -> None:
    request, reply = write_multiple(2, 0x6006, 0, 1600, 0xFFFF, 0xFF60)
    script = [(request, None), (request, reply)]
    async with expected_protocol(script) as peer, make_bus(peer.serial_url, retries=1, timeout_s=0.1) as bus:
        await bus.write_registers("press", 2, 0x6006, [0, 1600, 0xFFFF, 0xFF60], what="limits", idempotent=True)
    assert peer.received == [request, request]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda bus: bus.read_holding(DEVICE, 0, 0x0008, 1, what="x"), "slave id"),
        (lambda bus: bus.read_holding(DEVICE, 248, 0x0008, 1, what="x"), "slave id"),
        (lambda bus: bus.read_holding(DEVICE, 1, 0x0008, 0, what="x"), "count"),
        (lambda bus: bus.read_holding(DEVICE, 1, 0x0008, 126, what="x"), "count"),
        (lambda bus: bus.read_holding(DEVICE, 1, 0x10000, 1, what="x"), "address"),
        (lambda bus: bus.read_holding(DEVICE, 1, 0xFFFF, 2, what="x"), "past 0xFFFF"),
        (lambda bus: bus.write_register(DEVICE, 1, 0x0005, 0x10000, what="x"), "0x0005"),
        (lambda bus: bus.write_registers(DEVICE, 1, 0x0005, [-1], what="x"), "0x0005"),
        (lambda bus: bus.write_registers(DEVICE, 1, 0x0005, [0] * 124, what="x"), "count"),
    ],
)
async def test_bad_arguments_are_refused_before_opening_the_port(call: object, match: str) -> None:
    bus = ModbusBus(port="socket://127.0.0.1:1", timeout_s=0.1)  # opening it would fail differently
    with pytest.raises(ValueError, match=match):
        await call(bus)  # type: ignore[operator]
    assert not bus.is_open


@pytest.mark.parametrize(
    "overrides",
    [{"baudrate": 0}, {"parity": "X"}, {"bytesize": 9}, {"stopbits": 3}, {"timeout_s": 0}, {"retries": -1}],
)
def test_bad_line_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ModbusBus(port="socket://127.0.0.1:1", **overrides)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- sharing, timing


async def test_two_slaves_on_one_bus_never_interleave() -> None:
    replies = {
        read_request(1, 0x0050, 2): read_reply(1, 0x0000, 0x0084),
        read_request(2, 0x602C, 2): read_reply(2, 0xFFFF, 0xFF00),
    }
    async with half_duplex_peer(replies.get, n_requests=6, hold_s=0.02) as peer:
        async with make_bus(peer.serial_url, baudrate=115200) as bus:
            results = await asyncio.gather(
                *(
                    bus.read_holding("cell", 1, 0x0050, 2, what="gross weight")
                    if i % 2 == 0
                    else bus.read_holding("press", 2, 0x602C, 2, what="position")
                    for i in range(6)
                )
            )
    assert [int32_from_words(*r) for r in results] == [132, -256] * 3
    assert [request[0] for request in peer.requests] == [1, 2, 1, 2, 1, 2]
    for i in range(5):
        assert peer.request_at[i + 1] >= peer.reply_at[i], "a request went out before the previous reply"


async def test_silent_gap_is_kept_between_frames() -> None:
    async with half_duplex_peer(lambda _: STATUS_REPLY, n_requests=3) as peer:
        async with make_bus(peer.serial_url, baudrate=1200, timeout_s=0.5) as bus:
            for _ in range(3):
                assert await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word") == [0x0802]
    gap_s = bus.silent_gap_s
    assert gap_s > 0.03
    for i in range(2):
        assert peer.request_at[i + 1] - peer.reply_at[i] >= gap_s * 0.99


async def test_cancelled_call_releases_the_lock_and_keeps_the_reply_window() -> None:
    cancelled: list[bool] = []
    async with (
        half_duplex_peer(lambda _: STATUS_REPLY if cancelled else None, n_requests=2) as peer,
        make_bus(peer.serial_url, timeout_s=0.3) as bus,
    ):
        task = asyncio.create_task(bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word"))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        cancelled.append(True)
        assert await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word") == [0x0802]
    assert peer.request_at[1] - peer.request_at[0] >= 0.3, "the slave's reply window was not respected"


async def test_stale_late_reply_is_discarded_not_taken_as_the_next_answer() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(len(STATUS_REQUEST))
        await asyncio.sleep(0.2)  # answers after the master gave up
        writer.write(read_reply(1, 0x1111))
        await reader.readexactly(len(STATUS_REQUEST))
        writer.write(read_reply(1, 0x2222))
        await writer.drain()
        await reader.read()  # until the master closes
        writer.close()

    async with serve(handle) as url, make_bus(url, timeout_s=0.1) as bus:
        with pytest.raises(DeviceTimeout):
            await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word")
        await asyncio.sleep(0.25)  # the late reply is now waiting in the receive buffer
        assert await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word") == [0x2222]


# ------------------------------------------------------------------------------------- reconnection


@contextlib.asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[str]:
    """A TCP server for hand-written peers; yields its socket:// URL."""
    tasks: list[asyncio.Task[Any]] = []

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await handler(reader, writer)

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    try:
        yield f"socket://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2.0)


async def test_port_gone_is_disconnected_and_the_next_call_reconnects() -> None:
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readexactly(len(STATUS_REQUEST))
        if connections == 1:  # the "USB cable" is pulled mid-transaction
            writer.close()
            return
        writer.write(STATUS_REPLY)
        await writer.drain()
        await reader.read()
        writer.close()

    async with serve(handle) as url, make_bus(url, retries=3) as bus:
        with pytest.raises(DeviceDisconnected) as caught:
            await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word")
        assert "0x0008" in str(caught.value) and DEVICE in str(caught.value)
        assert not bus.is_open
        assert await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word") == [0x0802]
    assert connections == 2


async def test_missing_port_is_disconnected_naming_the_path() -> None:
    bus = ModbusBus(port="/dev/rig-no-such-port", timeout_s=0.1, name="bus0")
    with pytest.raises(DeviceDisconnected, match="/dev/rig-no-such-port"):
        await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word")


@dataclass
class FakePortInfo:
    device: str
    serial_number: str | None


async def test_port_is_refound_by_usb_serial_number(monkeypatch: pytest.MonkeyPatch) -> None:
    async with expected_protocol([(STATUS_REQUEST, STATUS_REPLY)]) as peer:
        ports = [FakePortInfo("/dev/ttyUSB0", "OTHER"), FakePortInfo(peer.serial_url, "A10KX3")]
        monkeypatch.setattr("drivers.modbus_bus.list_ports.comports", lambda: ports)
        bus = make_bus("/dev/ttyUSB0", usb_serial="A10KX3")
        try:
            assert await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word") == [0x0802]
        finally:
            await bus.close()
    assert bus.port == peer.serial_url


async def test_absent_usb_serial_number_is_disconnected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("drivers.modbus_bus.list_ports.comports", lambda: [FakePortInfo("/dev/ttyUSB0", "OTHER")])
    bus = make_bus("/dev/ttyUSB0", usb_serial="A10KX3")
    with pytest.raises(DeviceDisconnected, match="A10KX3"):
        await bus.read_holding(DEVICE, 1, 0x0008, 1, what="status word")
    assert not bus.is_open


async def test_port_closes_when_the_last_user_detaches() -> None:
    async with expected_protocol([]) as peer:
        bus = make_bus(peer.serial_url)
        await bus.attach("cell")
        await bus.attach("press")
        assert bus.is_open
        await bus.detach("cell")
        assert bus.is_open
        await bus.detach("press")
        assert not bus.is_open


async def test_closing_the_port_leaves_the_event_loop_free() -> None:
    # pyserial's socket:// close sleeps 0.3 s; done on the loop it would stall every other device
    ran: list[str] = []

    async def other_device() -> None:
        ran.append("other device")

    async with expected_protocol([]) as peer:
        bus = make_bus(peer.serial_url)
        await bus.open()
        task = asyncio.create_task(other_device())
        await bus.close()
        assert ran == ["other device"]  # it ran while the port was closing, not after
        await task
        assert not bus.is_open
