"""The simulated Mark-10 gauge on the wire: raw TCP bytes as a serial line would carry them."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator

import pytest

from hardware_sim import LineTiming, RigModel, SimClock, SimParams
from hardware_sim.mark10_gauge import UNITS, Mark10Gauge, nice_step

PRESSURE_KPA = 100.0
READING_RE = re.compile(rb"^(-?\d+\.\d{2}) N\r\n$")
NOISE_N = 0.05  # sensor noise (4 mN) + drift + warm-up + one display step, with margin


def _model(speed: float = 1.0) -> RigModel:
    model = RigModel(SimParams(), clock=SimClock(speed=speed))
    model.pin_pressure_kpa = PRESSURE_KPA
    return model


@pytest.fixture
async def gauge() -> AsyncIterator[Mark10Gauge]:
    g = Mark10Gauge(_model(), timing=LineTiming(baudrate=115200))
    await g.start()
    yield g
    await g.close()


class Line:
    """A raw TCP client standing in for the serial port."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Line:
        """Connect to the gauge."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def ask(self, command: bytes, timeout_s: float = 1.0) -> bytes:
        """Send one command and read one line."""
        self.writer.write(command)
        await self.writer.drain()
        return await asyncio.wait_for(self.reader.readline(), timeout_s)

    async def close(self) -> None:
        """Close the client side."""
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


@pytest.fixture
async def line(gauge: Mark10Gauge) -> AsyncIterator[Line]:
    client = await Line.open(gauge.port)
    yield client
    await client.close()


def _value(reply: bytes) -> float:
    m = READING_RE.match(reply)
    assert m, reply
    return float(m.group(1))


async def test_query_answers_the_model_force_in_newtons(gauge: Mark10Gauge, line: Line) -> None:
    reply = await line.ask(b"?\r\n")
    truth_n = gauge.model.state()["force_n"]
    assert truth_n == pytest.approx(PRESSURE_KPA * 1e3 * gauge.model.area_m2)
    assert _value(reply) == pytest.approx(truth_n, abs=NOISE_N)
    assert gauge.url == f"socket://127.0.0.1:{gauge.port}"


async def test_current_reading_query_with_a_lone_carriage_return(gauge: Mark10Gauge, line: Line) -> None:
    reply = await line.ask(b"?C\r")
    assert _value(reply) == pytest.approx(gauge.model.state()["force_n"], abs=NOISE_N)


@pytest.mark.parametrize(
    ("command", "label", "decimals"),
    [
        (b"LB", "lbF", 3),
        (b"KG", "kgF", 3),
        (b"G", "gF", 0),
        (b"OZ", "ozF", 2),
        (b"MN", "mN", 0),
        (b"KN", "kN", 5),
    ],
)
async def test_unit_commands_switch_the_reply_unit_and_resolution(
    gauge: Mark10Gauge, line: Line, command: bytes, label: str, decimals: int
) -> None:
    line.writer.write(command + b"\r\n")  # setting commands are silent
    reply = await line.ask(b"?\r\n")
    number = r"\d+" + (rf"\.\d{{{decimals}}}" if decimals else "")
    m = re.match(rf"^({number}) {label}\r\n$".encode(), reply)
    assert m, reply
    unit = UNITS[command.decode()]
    expected = gauge.model.state()["force_n"] / unit.n_per_unit
    step = nice_step(100.0 / unit.n_per_unit / 10_000)
    assert float(m.group(1)) == pytest.approx(expected, abs=NOISE_N / unit.n_per_unit + step)
    # and back to newtons
    line.writer.write(b"N\r\n")
    assert _value(await line.ask(b"?\r\n")) == pytest.approx(gauge.model.state()["force_n"], abs=NOISE_N)


def test_resolution_of_a_100_n_gauge_is_like_a_series_5_m5_20() -> None:
    g = Mark10Gauge(_model(), timing=LineTiming())
    assert [g.resolution(UNITS[u]) for u in ("N", "LB", "OZ", "KG", "G")] == pytest.approx(
        [0.01, 0.002, 0.05, 0.001, 1.0]
    )


async def test_zero_makes_the_present_load_read_zero(line: Line) -> None:
    line.writer.write(b"Z\r\n")
    assert abs(_value(await line.ask(b"?\r\n"))) < NOISE_N


async def test_unknown_command_answers_illegal_command(line: Line) -> None:
    assert await line.ask(b"HELLO\r\n") == b"*10\r\n"


async def test_replies_wait_for_the_wire_time_of_the_baud_rate() -> None:
    g = Mark10Gauge(_model(), timing=LineTiming(baudrate=1200))
    await g.start()
    client = await Line.open(g.port)
    try:
        t0 = time.monotonic()
        reply = await client.ask(b"?\r\n")
        elapsed = time.monotonic() - t0
    finally:
        await client.close()
        await g.close()
    wire_s = LineTiming(baudrate=1200).frame_s(3 + len(reply))
    assert wire_s == pytest.approx(0.1)
    assert elapsed >= wire_s * 0.95


async def test_streaming_gauge_gives_a_late_client_a_partial_first_line() -> None:
    g = Mark10Gauge(_model(), timing=LineTiming(baudrate=115200), stream_hz=50)
    await g.start()
    client = await Line.open(g.port)
    try:
        lines = [await asyncio.wait_for(client.reader.readline(), 1.0) for _ in range(4)]
    finally:
        await client.close()
        await g.close()
    assert READING_RE.match(lines[0]) is None, lines[0]
    assert lines[0].endswith(b"\r\n")
    for whole in lines[1:]:
        assert _value(whole) == pytest.approx(PRESSURE_KPA * 1e3 * g.model.area_m2, abs=NOISE_N)
    assert any(whole.endswith(lines[0]) and len(whole) > len(lines[0]) for whole in lines[1:])


async def test_aout_command_starts_and_stops_streaming(gauge: Mark10Gauge, line: Line) -> None:
    line.writer.write(b"AOUT20\r\n")
    unasked = [await asyncio.wait_for(line.reader.readline(), 1.0) for _ in range(3)]
    assert all(READING_RE.match(x) for x in unasked), unasked  # connected before: no partial line
    line.writer.write(b"AOUT0\r\n")
    for _ in range(5):  # a few lines may already be on their way; a running stream would never go quiet
        try:
            await asyncio.wait_for(line.reader.readline(), 0.2)
        except TimeoutError:
            break
    else:
        pytest.fail("the stream did not stop after AOUT0")


async def test_fault_no_reply_is_silence(gauge: Mark10Gauge, line: Line) -> None:
    gauge.faults.set(no_reply=True)
    with pytest.raises(TimeoutError):
        await line.ask(b"?\r\n", timeout_s=0.3)
    gauge.faults.clear()
    assert READING_RE.match(await line.ask(b"?\r\n"))


async def test_fault_delay_delays_the_reply(gauge: Mark10Gauge, line: Line) -> None:
    gauge.faults.set(delay_s=0.25)
    t0 = time.monotonic()
    reply = await line.ask(b"?\r\n")
    assert time.monotonic() - t0 >= 0.25
    assert READING_RE.match(reply)


async def test_fault_corrupt_sends_garbage_bytes(gauge: Mark10Gauge, line: Line) -> None:
    gauge.faults.set(corrupt=True)
    reply = await line.ask(b"?\r\n")
    assert reply.endswith(b"\r\n")
    with pytest.raises(UnicodeDecodeError):
        reply[:-2].decode("ascii")


async def test_fault_stuck_freezes_the_value(gauge: Mark10Gauge, line: Line) -> None:
    before = await line.ask(b"?\r\n")
    gauge.faults.set(stuck=True)
    gauge.model.pin_pressure_kpa = 2 * PRESSURE_KPA
    assert await line.ask(b"?\r\n") == before
    assert await line.ask(b"?\r\n") == before
    gauge.faults.clear()
    assert _value(await line.ask(b"?\r\n")) == pytest.approx(2 * _value(before), abs=2 * NOISE_N)


async def test_fault_overload_reads_past_capacity(gauge: Mark10Gauge, line: Line) -> None:
    gauge.faults.set(overload=True)
    assert _value(await line.ask(b"?\r\n")) > gauge.capacity_n


async def test_a_load_past_capacity_is_clamped_past_capacity() -> None:
    model = _model()
    model.pin_pressure_kpa = 1200.0  # 136 N on Ø12 mm
    g = Mark10Gauge(model, timing=LineTiming(baudrate=115200), overload_text="OVER")
    await g.start()
    client = await Line.open(g.port)
    try:
        assert await client.ask(b"?\r\n") == b"OVER\r\n"
        g.overload_text = None
        assert _value(await client.ask(b"?\r\n")) == pytest.approx(110.0)
    finally:
        await client.close()
        await g.close()


async def test_fault_nan_replies_a_non_number(gauge: Mark10Gauge, line: Line) -> None:
    gauge.faults.set(nan=True)
    assert await line.ask(b"?\r\n") == b"nan N\r\n"


async def test_fault_disconnect_drops_and_refuses_connections(gauge: Mark10Gauge, line: Line) -> None:
    assert READING_RE.match(await line.ask(b"?\r\n"))
    gauge.faults.set(disconnect=True)
    assert await asyncio.wait_for(line.reader.read(100), 1.0) == b""
    refused = await Line.open(gauge.port)
    try:
        assert await asyncio.wait_for(refused.reader.read(100), 1.0) == b""
    finally:
        await refused.close()
    gauge.faults.clear()
    again = await Line.open(gauge.port)
    try:
        assert READING_RE.match(await again.ask(b"?\r\n"))
    finally:
        await again.close()
