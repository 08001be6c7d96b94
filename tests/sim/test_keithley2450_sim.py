"""The simulated Keithley 2450 on the wire: SCPI over a raw socket, coupled to the cell physics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pyvisa

from hardware_sim import ManualClock, RigModel, SimClock, SimParams
from hardware_sim.keithley2450 import Keithley2450Sim
from hardware_sim.params import C_PER_MAH

READ_ALL = ':READ? "defbuffer1", SOUR, READ, REL'


class Scpi:
    """A raw-socket SCPI client on the test's event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Scpi:
        """Connect to the instrument."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, line: str) -> None:
        """Send one program message as it is."""
        self.writer.write(line.encode() + b"\n")
        await self.writer.drain()

    async def write(self, line: str) -> None:
        """Send commands (no queries) and wait until they ran (`*OPC?` appended)."""
        assert await self.query(f"{line};*OPC?") == "1"

    async def query(self, line: str, timeout_s: float = 2.0) -> str:
        """Send one message and read one reply line."""
        await self.send(line)
        raw = await asyncio.wait_for(self.reader.readline(), timeout_s)
        assert raw.endswith(b"\n"), raw
        return raw.decode().rstrip("\n")

    async def errors(self) -> list[int]:
        """Drain the error queue: the codes before 0."""
        codes: list[int] = []
        for _ in range(20):
            code = int((await self.query(":SYST:ERR?")).split(",")[0])
            if code == 0:
                return codes
            codes.append(code)
        raise AssertionError(f"error queue never emptied: {codes}")

    async def close(self) -> None:
        """Close the client side."""
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def smu(clock: ManualClock) -> AsyncIterator[Keithley2450Sim]:
    sim = Keithley2450Sim(RigModel(SimParams(), clock=clock))
    await sim.start()
    yield sim
    await sim.close()


@pytest.fixture
async def scpi(smu: Keithley2450Sim) -> AsyncIterator[Scpi]:
    client = await Scpi.open(smu.port)
    yield client
    await client.close()


GALVANOSTAT = ':OUTP:CURR:SMOD HIMP;:SOUR:FUNC CURR;:SENS:FUNC "VOLT";:SOUR:CURR:VLIM 5'


async def test_plain_pyvisa_session_reads_the_identity(smu: Keithley2450Sim) -> None:
    def ask() -> str:
        rm = pyvisa.ResourceManager("@py")
        try:
            inst = rm.open_resource(smu.resource, read_termination="\n", write_termination="\n")
            assert isinstance(inst, pyvisa.resources.MessageBasedResource)
            inst.timeout = 2000
            try:
                return inst.query("*IDN?")
            finally:
                inst.close()
        finally:
            rm.close()

    assert smu.resource == f"TCPIP0::127.0.0.1::{smu.port}::SOCKET"
    assert await asyncio.to_thread(ask) == "KEITHLEY INSTRUMENTS,MODEL 2450,04512345,1.7.12b"


async def test_galvanostatic_plating_moves_the_right_charge(
    smu: Keithley2450Sim, scpi: Scpi, clock: ManualClock
) -> None:
    model = smu.model
    model.pin_pressure_kpa = 180.0
    i_a = -0.5e-3 * model.area_cm2  # 0.5 mA/cm² plating
    cap0_c = model.cap_c
    await scpi.write(f"{GALVANOSTAT};:SOUR:CURR {i_a:.6E};:OUTP ON")
    clock.advance(1000.0)
    sour, volt, rel = (float(x) for x in (await scpi.query(READ_ALL)).split(","))
    await scpi.write(":OUTP OFF")
    assert await scpi.errors() == []
    q_c = abs(i_a) * 1000.0
    sei_share = model.params.electrolyte_params.sei_share_of_loss * model.first_cycle_loss(180.0)
    assert model.plated_c == pytest.approx(q_c, rel=1e-6)
    assert model.na_rev_c == pytest.approx((q_c - cap0_c) * (1 - sei_share), rel=1e-6)
    assert q_c / C_PER_MAH / model.area_cm2 == pytest.approx(0.5 * 1000 / 3600)
    assert sour == pytest.approx(i_a, rel=1e-6)
    assert -0.2 < volt < 0.0  # plating overpotential, Al vs Na
    assert rel == pytest.approx(1000.0)
    assert model.source_mode == "open"  # HIMP


async def test_normal_output_off_shorts_the_cell(smu: Keithley2450Sim, scpi: Scpi, clock: ManualClock) -> None:
    assert await scpi.query(":OUTP:CURR:SMOD?") == "NORM"  # the power-on default
    await scpi.write(":SOUR:FUNC CURR;:OUTP OFF")
    clock.advance(10.0)
    state = smu.model.state()
    assert state["source_mode"] == "short"
    # a real 2450 limits the NORMAL output-off source to 10 % of the present current range
    limit_a = 0.1 * smu.state.current_range_a
    assert state["short_c"] == pytest.approx(limit_a * 10.0, rel=1e-3)
    assert state["voltage_v"] == 0.0
    assert state["current_a"] < 0.0  # the 0 V source drains the cell


async def test_himp_output_off_leaves_the_cell_open(smu: Keithley2450Sim, scpi: Scpi, clock: ManualClock) -> None:
    await scpi.write(":OUTP:CURR:SMOD HIMP;:SOUR:FUNC CURR;:OUTP OFF")
    assert await scpi.query(":OUTP:CURR:SMOD?") == "HIMP"
    short_before = smu.model.short_c
    clock.advance(10.0)
    state = smu.model.state()
    assert state["source_mode"] == "open"
    assert state["short_c"] == short_before
    assert state["current_a"] == 0.0
    assert state["voltage_v"] == pytest.approx(smu.model.params.cell.al_ocv_v)


async def test_rst_restores_normal_output_off(smu: Keithley2450Sim, scpi: Scpi) -> None:
    await scpi.write(":OUTP:SMOD HIMP")
    assert smu.model.source_mode == "open"
    await scpi.write("*RST")
    assert await scpi.query(":OUTP:CURR:SMOD?;:OUTP?;:SOUR:FUNC?") == "NORM;0;VOLT"
    assert smu.model.source_mode == "short"


async def test_voltage_compliance_and_trip(smu: Keithley2450Sim, scpi: Scpi) -> None:
    await scpi.write(f"{GALVANOSTAT};:SOUR:CURR:VLIM 0.5;:SOUR:CURR 1E-3;:OUTP ON")
    volt = float(await scpi.query(":READ?"))
    assert volt == pytest.approx(0.5)  # pristine Al at 1.6 V cannot take the current below 0.5 V
    assert await scpi.query(":SOUR:CURR:VLIM:TRIP?") == "1"
    await scpi.write(":SOUR:CURR:VLIM 21")
    assert await scpi.query(":SOUR:CURR:VLIM:TRIP?") == "0"
    assert float(await scpi.query(":READ?")) > 1.6


async def test_fault_compliance_trip_reports_trip(smu: Keithley2450Sim, scpi: Scpi) -> None:
    await scpi.write(f"{GALVANOSTAT};:SOUR:CURR 1E-4;:OUTP ON")
    assert await scpi.query(":SOUR:CURR:VLIM:TRIP?") == "0"
    smu.faults.set(compliance_trip=True)
    assert await scpi.query(":SOUR:CURR:VLIM:TRIP?") == "1"
    assert smu.model.measure().in_compliance
    smu.faults.clear()
    assert await scpi.query(":SOUR:CURR:VLIM:TRIP?") == "0"
    assert not smu.model.forced_compliance


async def test_reading_past_a_fixed_range_is_overrange(smu: Keithley2450Sim, scpi: Scpi) -> None:
    await scpi.write(f"{GALVANOSTAT};:SOUR:CURR 0;:SENS:VOLT:RANG 0.02;:OUTP ON")
    assert await scpi.query(":READ?") == "9.9E+37"
    await scpi.write(":SENS:VOLT:RANG:AUTO 1")
    assert float(await scpi.query(":READ?")) == pytest.approx(1.6)
    assert await scpi.errors() == []


async def test_read_with_output_off_is_stale_data(smu: Keithley2450Sim, scpi: Scpi) -> None:
    await scpi.write(GALVANOSTAT)
    assert await scpi.query(READ_ALL) == "9.91E+37,9.91E+37,9.91E+37"
    assert await scpi.errors() == [-230]


async def test_error_queue_codes(scpi: Scpi) -> None:
    await scpi.write("FOO:BAR 1")
    await scpi.write(":SOUR:CURR:VLIM 500")
    await scpi.write(":SOUR:CURR 5")
    await scpi.write(":OUTP:CURR:SMOD SOMETIMES")
    await scpi.write(":SENS:VOLT:NPLC")
    assert await scpi.query(":SYST:ERR?") == '-113,"Undefined header"'
    assert await scpi.query(":SYST:ERR?") == '-222,"Data out of range"'
    assert await scpi.errors() == [-222, -224, -109]
    assert await scpi.query(":SYST:ERR?") == '0,"No error"'
    assert await scpi.query(":SOUR:CURR:VLIM?") == "2.100000E+01"  # the rejected value did not stick


async def test_remote_sense_change_with_output_on_is_a_settings_conflict(scpi: Scpi) -> None:
    await scpi.write(f"{GALVANOSTAT};:SOUR:CURR 0;:OUTP ON")
    await scpi.write(":SENS:VOLT:RSEN ON")
    assert await scpi.errors() == [-221]
    assert await scpi.query(":SENS:VOLT:RSEN?") == "0"
    await scpi.write(":OUTP OFF;:SENS:VOLT:RSEN ON")
    assert await scpi.query(":SENS:VOLT:RSEN?") == "1"
    assert await scpi.errors() == []


async def test_scpi_mnemonic_rules(scpi: Scpi) -> None:
    await scpi.write(":source1:current:vlimit:level 3.5")  # long forms, any case, suffix, optional node
    assert await scpi.query("SOUR:CURR:VLIM?") == "3.500000E+00"  # leading colon optional
    await scpi.write(":SOURC:CURR:VLIM 4")  # neither short nor long form
    await scpi.write(":SOUR:CURR 1E-3;VLIM 2")  # relative to :SOUR: -> :SOUR:VLIM does not exist
    assert await scpi.errors() == [-113, -113]
    await scpi.write(":SOUR:CURR:VLIM 2;LEV 2E-3")  # relative to :SOUR:CURR:
    assert await scpi.query(":SOUR:CURR:VLIM?;LEV?;:OUTP:CURR:SMOD?") == "2.000000E+00;2.000000E-03;NORM"
    assert await scpi.query(':SENS:FUNC "VOLT";:FUNC?') == '"VOLT:DC"'
    await scpi.write(":OUTPut:STATe 1")
    assert await scpi.query(":OUTP?") == "1"
    assert await scpi.errors() == []


async def test_nplc_sets_how_long_a_reading_takes() -> None:
    sim = Keithley2450Sim(RigModel(SimParams(), clock=SimClock(speed=1.0)), line_frequency_hz=50)
    await sim.start()
    client = await Scpi.open(sim.port)
    try:
        await client.write(f"{GALVANOSTAT};:SOUR:CURR 0;:SENS:VOLT:NPLC 10;:OUTP ON")
        t0 = time.monotonic()
        await client.query(":READ?")
        slow_s = time.monotonic() - t0
        await client.write(":SENS:VOLT:NPLC 0.01")
        t0 = time.monotonic()
        await client.query(":READ?")
        fast_s = time.monotonic() - t0
    finally:
        await client.close()
        await sim.close()
    assert slow_s >= 0.2 * 0.95  # 10 PLC at 50 Hz
    assert fast_s < 0.1


async def test_fault_nan_reads_overrange_code(smu: Keithley2450Sim, scpi: Scpi) -> None:
    await scpi.write(f"{GALVANOSTAT};:SOUR:CURR 0;:OUTP ON")
    smu.faults.set(nan=True)
    assert (await scpi.query(READ_ALL)).split(",")[1] == "9.9E+37"


async def test_fault_scpi_error_is_queued_on_every_command(smu: Keithley2450Sim, scpi: Scpi) -> None:
    smu.faults.set(scpi_error=-300)
    await scpi.send(":OUTP OFF;:SOUR:FUNC CURR;:OUTP?")
    assert await asyncio.wait_for(scpi.reader.readline(), 2.0) == b"0\n"
    smu.faults.clear()
    assert await scpi.errors() == [-300, -300, -300]


async def test_fault_no_reply_is_silence(smu: Keithley2450Sim, scpi: Scpi) -> None:
    smu.faults.set(no_reply=True)
    with pytest.raises(TimeoutError):
        await scpi.query("*IDN?", timeout_s=0.3)
    smu.faults.clear()
    assert (await scpi.query("*IDN?")).startswith("KEITHLEY INSTRUMENTS,MODEL 2450,")


async def test_fault_delay_delays_the_reply(smu: Keithley2450Sim, scpi: Scpi) -> None:
    smu.faults.set(delay_s=0.25)
    t0 = time.monotonic()
    assert await scpi.query(":OUTP?") == "0"
    assert time.monotonic() - t0 >= 0.25


async def test_fault_corrupt_sends_garbage(smu: Keithley2450Sim, scpi: Scpi) -> None:
    smu.faults.set(corrupt=True)
    await scpi.send("*IDN?")
    raw = await asyncio.wait_for(scpi.reader.readline(), 2.0)
    assert raw.endswith(b"\n")
    with pytest.raises(UnicodeDecodeError):
        raw[:-1].decode("ascii")


async def test_fault_disconnect_drops_and_refuses(smu: Keithley2450Sim, scpi: Scpi) -> None:
    smu.faults.set(disconnect=True)
    assert await asyncio.wait_for(scpi.reader.read(100), 1.0) == b""
    refused = await Scpi.open(smu.port)
    try:
        assert await asyncio.wait_for(refused.reader.read(100), 1.0) == b""
    finally:
        await refused.close()
    smu.faults.clear()
    again = await Scpi.open(smu.port)
    try:
        assert await again.query(":OUTP?") == "0"
    finally:
        await again.close()
