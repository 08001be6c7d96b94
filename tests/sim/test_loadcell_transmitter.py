"""The simulated load-cell transmitter (devices.md §1): exact bytes, a plain pymodbus client, and its traps."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

from hardware_sim import LineTiming, ManualClock, RigModel, SimClock, SimParams
from hardware_sim.loadcell_transmitter import LoadCellTransmitter
from hardware_sim.rtu_line import ModbusError, RtuLineServer
from tests.sim.rtu_client import (
    RawRtu,
    frame,
    hexframe,
    int32,
    pin_force,
    quiet_model,
    read_req,
    registers,
    words,
    write1_req,
    writen_req,
)

UNLOCK = 0x5AA5
STATUS_SIGN = 1 << 3
STATUS_UNSTABLE = 1 << 5
STATUS_OVERFLOW = 1 << 6
STATUS_AT_ZERO = 1 << 7
STATUS_OVERLOAD = 1 << 9


def gross(lc: LoadCellTransmitter) -> int:
    """Gross weight (0x0050-0x0051) in display counts, read straight from the device object."""
    return int32(*lc.read_registers(0x0050, 2))


def status(lc: LoadCellTransmitter) -> int:
    """The status word 0x0008."""
    return lc.read_registers(0x0008, 1)[0]


def disarm(lc: LoadCellTransmitter) -> None:
    """What a correct driver does: unlock, then zero and creep tracking off."""
    lc.write_registers(0x0005, [UNLOCK])
    lc.write_registers(0x0060, [0, 0])
    lc.write_registers(0x0066, [0, 0])


@pytest.fixture
async def quiet_line() -> AsyncIterator[tuple[LoadCellTransmitter, RigModel, ManualClock, RawRtu]]:
    model, clock = quiet_model()
    lc = LoadCellTransmitter(model, decimals=3)
    async with RtuLineServer(slaves=[lc], timing=LineTiming(enabled=False)) as server:
        client = await RawRtu.open(server.port)
        yield lc, model, clock, client
        await client.close()


# ------------------------------------------------------------ devices.md vectors


async def test_devices_md_vectors_byte_exact_over_tcp() -> None:
    """The CRC-checked conversation of devices.md §1, produced by real physics on a quiet sensor."""
    model, clock = quiet_model()
    lc = LoadCellTransmitter(model, decimals=2, zero_tracking_range_d=0, creep_tracking_range_d=0)
    async with RtuLineServer(slaves=[lc], timing=LineTiming(baudrate=9600)) as server:
        client = await RawRtu.open(server.port)
        try:
            pin_force(model, 1.32)  # 132 counts at 2 decimal places
            clock.advance(10.0)
            reply = await client.ask(hexframe("01 03 00 08 00 01 05 C8"), 7)
            assert reply == hexframe("01 03 02 08 02 3E 45")  # status 0x0802: 2 decimal places
            reply = await client.ask(hexframe("01 03 00 50 00 02 C4 1A"), 9)
            assert reply == hexframe("01 03 04 00 00 00 84 FA 50")  # gross 132
            pin_force(model, 3.54)
            clock.advance(10.0)
            reply = await client.ask(hexframe("01 03 00 1E 00 02 A4 0D"), 9)
            assert reply == hexframe("01 03 04 00 00 01 62 7A 4A")  # measured value 354
            reply = await client.ask(hexframe("01 10 00 05 00 01 02 5A A5 5C DE"), 8)
            assert reply == frame(bytes.fromhex("01 10 00 05 00 01"))  # unlock accepted
            reply = await client.ask(hexframe("01 10 00 54 00 02 04 00 00 00 64 F6 8B"), 8)
            assert reply == frame(bytes.fromhex("01 10 00 54 00 02"))  # tare = 100 accepted
            values = registers(await client.ask(read_req(1, 0x0050, 6), 17))
            assert [int32(values[0], values[1]), int32(values[2], values[3]), int32(values[4], values[5])] == [
                354,
                254,
                100,
            ]
            assert int32(*registers(await client.ask(read_req(1, 0x001E, 2), 9))) == 254  # displayed = net
        finally:
            await client.close()


# ----------------------------------------------------------- plain pymodbus client


async def test_plain_pymodbus_client_reads_the_model_force() -> None:
    model = RigModel(SimParams(), clock=SimClock(speed=1.0))
    model.pin_pressure_kpa = 100.0  # 11.31 N on the Ø12 mm electrode
    lc = LoadCellTransmitter(model)
    async with RtuLineServer(slaves=[lc], timing=LineTiming(baudrate=115200)) as server:
        client = AsyncModbusSerialClient(port=server.url, framer=FramerType.RTU, baudrate=115200, timeout=2, retries=0)
        try:
            assert await client.connect()
            rr = await client.read_holding_registers(0x50, count=2, device_id=1)
            assert not rr.isError(), rr
            (counts,) = struct.unpack(">i", struct.pack(">HH", *rr.registers))
            st = await client.read_holding_registers(0x08, count=1, device_id=1)
            assert not st.isError(), st
        finally:
            client.close()
    decimals = st.registers[0] & 0x7
    assert decimals == 3
    assert counts / 10**decimals == pytest.approx(model.force_n, abs=0.05)
    assert model.force_n == pytest.approx(11.31, abs=0.01)


# ------------------------------------------------------------------- the lock


async def test_locked_configuration_writes_are_acknowledged_and_ignored(
    quiet_line: tuple[LoadCellTransmitter, RigModel, ManualClock, RawRtu],
) -> None:
    lc, _, _, client = quiet_line
    req = writen_req(1, 0x0060, [0, 0])
    assert await client.ask(req, 8) == frame(bytes.fromhex("01 10 00 60 00 02"))  # looks accepted...
    assert registers(await client.ask(read_req(1, 0x0060, 2), 9)) == [2, 10]  # ...but nothing changed
    assert lc.ignored_writes == 1
    assert registers(await client.ask(read_req(1, 0x0005, 1), 7)) == [0]
    await client.ask(writen_req(1, 0x0005, [UNLOCK]), 8)
    assert registers(await client.ask(read_req(1, 0x0005, 1), 7)) == [UNLOCK]
    await client.ask(req, 8)
    assert registers(await client.ask(read_req(1, 0x0060, 2), 9)) == [0, 0]
    await client.ask(writen_req(1, 0x0005, [0]), 8)  # any other value locks again
    await client.ask(writen_req(1, 0x0060, [3, 3]), 8)
    assert registers(await client.ask(read_req(1, 0x0060, 2), 9)) == [0, 0]


def test_locked_writes_can_answer_exception_04_instead() -> None:
    model, _ = quiet_model()
    lc = LoadCellTransmitter(model, locked_write="exception")
    with pytest.raises(ModbusError) as err:
        lc.write_registers(0x0066, [0, 0])
    assert err.value.code == 4
    assert lc.read_registers(0x0066, 2) == [5, 10]


async def test_fc06_is_not_supported_and_int32_must_be_written_whole(
    quiet_line: tuple[LoadCellTransmitter, RigModel, ManualClock, RawRtu],
) -> None:
    lc, _, _, client = quiet_line
    assert await client.ask(write1_req(1, 0x0005, UNLOCK), 5) == frame(bytes.fromhex("01 86 01"))
    assert lc.locked
    await client.ask(writen_req(1, 0x0005, [UNLOCK]), 8)
    assert await client.ask(writen_req(1, 0x0054, [0]), 5) == frame(bytes.fromhex("01 90 02"))  # half a tare
    assert await client.ask(writen_req(1, 0x0050, words(5)), 5) == frame(bytes.fromhex("01 90 02"))  # read-only
    assert await client.ask(writen_req(1, 0x0023, [51]), 5) == frame(bytes.fromhex("01 90 03"))  # strength > 50
    assert await client.ask(writen_req(1, 0x005E, [0x0001]), 5) == frame(bytes.fromhex("01 90 03"))
    assert await client.ask(read_req(1, 0x0100, 1), 5) == frame(bytes.fromhex("01 83 02"))
    # all or nothing: a bad register in a block leaves the good ones unwritten
    assert await client.ask(writen_req(1, 0x0022, [0, 99]), 5) == frame(bytes.fromhex("01 90 03"))
    assert lc.filter_type == 1


# --------------------------------------------------------------- tare and zero


def test_tare_now_and_execute_zero() -> None:
    model, clock = quiet_model()
    lc = LoadCellTransmitter(model, zero_tracking_range_d=0, creep_tracking_range_d=0)
    pin_force(model, 2.5)
    clock.advance(2.0)
    lc.write_registers(0x0054, words(0x7FFFFFFF))  # locked: ignored
    assert lc.tare_counts == 0
    lc.write_registers(0x0005, [UNLOCK])
    lc.write_registers(0x0054, words(0x7FFFFFFF))
    assert lc.tare_counts == 2500
    assert int32(*lc.read_registers(0x0052, 2)) == 0
    assert gross(lc) == 2500
    pin_force(model, 3.0)
    clock.advance(2.0)
    assert int32(*lc.read_registers(0x0052, 2)) == 500
    lc.write_registers(0x005E, [0x00FF])
    assert gross(lc) == 0
    assert status(lc) & STATUS_AT_ZERO
    assert status(lc) & STATUS_SIGN  # net = 0 - 2500 < 0
    assert int32(*lc.read_registers(0x001E, 2)) == -2500


# ------------------------------------------------------------- tracking traps


def _deposit_run(*, disarmed: bool, noisy: bool) -> tuple[float, float]:
    """Plate 1 mAh/cm² for 2 h at a fixed press position; return (true, reported) force change in N."""
    clock = ManualClock()
    base = SimParams()
    kwargs = {} if noisy else {"loadcell_sensor": quiet_model()[0].params.loadcell_sensor}
    mechanics = base.mechanics.model_copy(update={"creep_rate_um_per_s": 0.0})  # only the deposit moves the force
    model = RigModel(SimParams(mechanics=mechanics, **kwargs), clock=clock)
    lc = LoadCellTransmitter(model)
    if disarmed:
        disarm(lc)
    model.axis.start_move(1700, velocity_pps=3200, accel_pps2=32000, decel_pps2=32000)
    for _ in range(20):
        clock.advance(0.5)
        gross(lc)
    f0, g0 = model.force_n, gross(lc)
    assert f0 > 15.0
    model.set_source("current", current_a=-0.5e-3 * model.area_cm2)  # 0.5 mA/cm², plating
    for _ in range(3600):
        clock.advance(2.0)  # a 0.5 Hz poll
        g = gross(lc)
    return model.force_n - f0, (g - g0) / 1000


@pytest.mark.parametrize("noisy", [False, True], ids=["quiet-sensor", "noisy-sensor"])
def test_factory_tracking_hides_a_growing_deposit_until_disarmed(noisy: bool) -> None:
    true_n, hidden_n = _deposit_run(disarmed=False, noisy=noisy)
    assert true_n > 0.15  # the deposit really pushed the force up
    assert abs(hidden_n) < 0.1 * true_n  # ...and creep tracking cancelled it
    true_n, seen_n = _deposit_run(disarmed=True, noisy=noisy)
    tolerance = 0.002 if not noisy else 0.12  # noise, drift and warm-up of a real cell
    assert seen_n == pytest.approx(true_n, abs=tolerance)


def _near_zero_ramp(lc: LoadCellTransmitter, model: RigModel, clock: ManualClock) -> int:
    """Ramp the force from 0 to 0.2 N over 400 s (first contact, slowly) and return the final gross reading."""
    for i in range(1, 801):
        pin_force(model, 0.2 * i / 800)
        clock.advance(0.5)
        g = gross(lc)
    return g


def test_zero_tracking_hides_a_slow_ramp_near_zero() -> None:
    model, clock = quiet_model()
    lc = LoadCellTransmitter(model, creep_tracking_range_d=0)  # zero tracking alone
    assert abs(_near_zero_ramp(lc, model, clock)) <= 2
    assert lc.zero_offset_counts == pytest.approx(200, abs=3)
    model, clock = quiet_model()
    lc = LoadCellTransmitter(model, creep_tracking_range_d=0)
    disarm(lc)
    assert _near_zero_ramp(lc, model, clock) == 200


def test_tracking_leaves_a_fast_load_step_visible() -> None:
    model, clock = quiet_model()
    lc = LoadCellTransmitter(model)  # factory settings
    for _ in range(10):
        clock.advance(0.05)
        gross(lc)
    pin_force(model, 20.0)
    for _ in range(100):
        clock.advance(0.05)  # 20 Hz polling for 5 s
        g = gross(lc)
    # the step is reported; only the last few counts of the filter's settling tail are slow enough to be eaten
    assert abs(g - 20000) <= 5
    assert lc.zero_offset_counts == pytest.approx(20000 - g, abs=1)


# ------------------------------------------------------------------- status


def test_status_overload_overflow_and_unstable() -> None:
    model, clock = quiet_model()
    lc = LoadCellTransmitter(model, capacity_n=100.0, zero_tracking_range_d=0, creep_tracking_range_d=0)
    clock.advance(2.0)
    assert status(lc) & (STATUS_OVERLOAD | STATUS_OVERFLOW | STATUS_UNSTABLE) == 0
    pin_force(model, 50.0)
    clock.advance(0.05)
    assert status(lc) & STATUS_UNSTABLE  # just changed
    clock.advance(1.0)
    assert not status(lc) & STATUS_UNSTABLE
    pin_force(model, 115.0)
    clock.advance(1.0)
    assert status(lc) & STATUS_OVERLOAD
    assert not status(lc) & STATUS_OVERFLOW
    pin_force(model, 250.0)  # beyond the ADC range (2 x capacity)
    clock.advance(1.0)
    assert status(lc) & STATUS_OVERFLOW
    assert gross(lc) < 250_000  # the code clips
    pin_force(model, 10.0)
    clock.advance(1.0)
    assert status(lc) & (STATUS_OVERLOAD | STATUS_OVERFLOW) == 0
    lc.faults.set(overload=True)
    assert status(lc) & STATUS_OVERLOAD


def test_fault_stuck_freezes_the_reported_values() -> None:
    model, clock = quiet_model()
    lc = LoadCellTransmitter(model, zero_tracking_range_d=0, creep_tracking_range_d=0)
    pin_force(model, 4.0)
    clock.advance(1.0)
    assert gross(lc) == 4000
    lc.faults.set(stuck=True)
    assert gross(lc) == 4000
    pin_force(model, 9.0)
    clock.advance(1.0)
    assert gross(lc) == 4000
    assert int32(*lc.read_registers(0x001E, 2)) == 4000
    lc.faults.clear()
    assert gross(lc) == 9000


def test_filter_applies_conversions_in_closed_form() -> None:
    model, clock = quiet_model()
    lc = LoadCellTransmitter(
        model, adc_speed_code=0, filter_strength=50, zero_tracking_range_d=0, creep_tracking_range_d=0
    )
    assert lc.sample_rate_sps == 10.0
    pin_force(model, 10.0)
    clock.advance(0.5)  # 5 conversions at 10 SPS
    a = 1 / 51
    assert gross(lc) == round(10_000 * (1 - (1 - a) ** 5))
    clock.advance(60.0)
    assert gross(lc) == 10_000
    disarm(lc)
    lc.write_registers(0x0022, [0])  # filter off: the next conversion is the reading
    pin_force(model, 3.0)
    clock.advance(0.1)
    assert gross(lc) == 3000


def test_adc_speed_raw_code_and_response_delay_registers() -> None:
    model, clock = quiet_model()
    lc = LoadCellTransmitter(model, adc_rates_sps=(50.0, 500.0), adc_speed_code=0)
    disarm(lc)
    lc.write_registers(0x0020, [1])
    assert lc.sample_rate_sps == 500.0
    with pytest.raises(ModbusError) as err:
        lc.write_registers(0x0020, [2])
    assert err.value.code == 3
    raw0 = int32(*lc.read_registers(0x002C, 2))
    pin_force(model, 10.0)
    clock.advance(1.0)
    raw1 = int32(*lc.read_registers(0x002C, 2))
    assert raw1 - raw0 == pytest.approx(10.0 * lc.adc_counts_per_n, abs=2)
    lc.write_registers(0x0004, [20])
    assert lc.response_delay_s() == pytest.approx(0.020)
    assert lc.read_registers(0x0004, 1) == [20]
