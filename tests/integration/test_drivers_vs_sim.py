"""Every driver against the simulator over its real transport: the same behaviour tests a real rig would pass.

The drivers are the production classes, pointed at the simulator's `socket://` lines and VISA resource. The
simulator's model is the ground truth: a reading must match `sim.model`, a move must move its platen, a plating
current must plate its charge.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from drivers.errors import UnsafeSetting
from drivers.interfaces import (
    ForceReading,
    ForceSensor,
    ForceStatus,
    GalvanostaticConfig,
    Potentiostat,
    Press,
)
from drivers.keithley2450 import Keithley2450
from drivers.leadshine_pr import LeadshinePR
from drivers.mark10 import Mark10
from drivers.modbus_bus import ModbusBus, int32_from_words
from drivers.modbus_transmitter import ModbusTransmitter
from hardware_sim.rig import LOADCELL_ID, SimulatedRig
from tests.integration.conftest import CAPACITY_N, GAUGE_TIMEOUT_S, TRAVEL_UM, settled, wait_until

FORCE_TOLERANCE_N = 0.05  # sensor noise, drift and display resolution; 0.3 % of the loads used here
REG_NET = 0x0052


def pressure_for_n(sim: SimulatedRig, force_n: float) -> float:
    """The pinned stack pressure (kPa) that puts `force_n` on the load cell."""
    return force_n / sim.model.area_m2 / 1e3


def truth_n(sim: SimulatedRig) -> float:
    """The model's true force now."""
    return float(sim.model.state()["force_n"])


# ------------------------------------------------------------------------------------------ force sensors


@dataclass
class ForceCase:
    """One force sensor on the simulated rig and how its tare shows."""

    sensor: ModbusTransmitter | Mark10
    #: True when `tare()` moves the value `read()` returns (the Mark-10 has only Z); the transmitter's tare
    #: moves its net register, and the driver reads gross, which only `zero()` moves.
    tare_moves_reading: bool

    async def tare_relative_n(self) -> float:
        """The device's own tare-relative value: the net register of the transmitter, the gauge's reading."""
        if isinstance(self.sensor, ModbusTransmitter):
            high, low = await self.sensor.bus.read_holding(
                self.sensor.name, LOADCELL_ID, REG_NET, 2, what="net weight (test)"
            )
            status = await self.sensor.bus.read_holding(self.sensor.name, LOADCELL_ID, 0x0008, 1, what="status")
            return int32_from_words(high, low) / 10 ** (status[0] & 0x7)
        return (await settled(self.sensor.read)).force_n()


@pytest.fixture(params=["modbus_transmitter", "mark10"])
async def force(request: pytest.FixtureRequest, sim: SimulatedRig, bus: ModbusBus) -> AsyncIterator[ForceCase]:
    """Each force sensor, connected and through its start-up check."""
    sensor: ModbusTransmitter | Mark10
    if request.param == "modbus_transmitter":
        sensor = ModbusTransmitter(bus=bus, device_id=LOADCELL_ID, name="load cell", capacity_n=CAPACITY_N)
    else:
        sensor = Mark10(name="force gauge", url=sim.gauge.url, timeout_s=GAUGE_TIMEOUT_S, capacity_n=CAPACITY_N)
    await sensor.connect()
    try:
        if isinstance(sensor, ModbusTransmitter):
            await sensor.verify_safe()
            yield ForceCase(sensor, tare_moves_reading=False)
        else:
            await sensor.set_unit_newtons()
            yield ForceCase(sensor, tare_moves_reading=True)
    finally:
        await sensor.close()


async def test_force_reading_is_the_models_force_at_two_loads(force: ForceCase, sim: SimulatedRig) -> None:
    assert isinstance(force.sensor, ForceSensor)
    seen: list[float] = []
    for load_n in (8.0, 30.0):
        sim.model.pin_pressure_kpa = pressure_for_n(sim, load_n)
        reading = await settled(force.sensor.read)
        assert reading.status == ForceStatus.OK, reading
        assert reading.valid
        assert reading.force_n() == pytest.approx(truth_n(sim), abs=FORCE_TOLERANCE_N)
        seen.append(reading.force_n())
    # the scale, not just an offset: 22 N more load reads 22 N more
    assert seen[1] - seen[0] == pytest.approx(22.0, abs=2 * FORCE_TOLERANCE_N)


async def test_force_readings_count_up_with_monotonic_timestamps(force: ForceCase, sim: SimulatedRig) -> None:
    sim.model.pin_pressure_kpa = pressure_for_n(sim, 12.0)
    readings: list[ForceReading] = [await force.sensor.read() for _ in range(6)]
    seqs = [r.seq for r in readings]
    assert seqs == list(range(seqs[0], seqs[0] + 6))
    times = [r.t_s for r in readings]
    assert all(later > earlier for earlier, later in itertools.pairwise(times))
    assert all(r.raw for r in readings)  # the raw reply is kept for diagnosis


async def test_zero_makes_the_present_load_read_zero_and_keeps_the_scale(force: ForceCase, sim: SimulatedRig) -> None:
    sim.model.pin_pressure_kpa = pressure_for_n(sim, 15.0)
    before = (await settled(force.sensor.read)).force_n()
    f1 = truth_n(sim)
    assert before == pytest.approx(f1, abs=FORCE_TOLERANCE_N)
    await force.sensor.zero()
    assert (await settled(force.sensor.read)).force_n() == pytest.approx(0.0, abs=FORCE_TOLERANCE_N)
    sim.model.pin_pressure_kpa = pressure_for_n(sim, 25.0)
    after = (await settled(force.sensor.read)).force_n()
    assert after == pytest.approx(truth_n(sim) - f1, abs=FORCE_TOLERANCE_N)


async def test_tare_makes_the_device_tare_relative_value_zero(force: ForceCase, sim: SimulatedRig) -> None:
    sim.model.pin_pressure_kpa = pressure_for_n(sim, 15.0)
    await settled(force.sensor.read)
    f1 = truth_n(sim)
    await force.sensor.tare()
    assert await force.tare_relative_n() == pytest.approx(0.0, abs=FORCE_TOLERANCE_N)
    reading = (await settled(force.sensor.read)).force_n()
    assert reading == pytest.approx(0.0 if force.tare_moves_reading else f1, abs=FORCE_TOLERANCE_N)
    sim.model.pin_pressure_kpa = pressure_for_n(sim, 25.0)
    await settled(force.sensor.read)
    f2 = truth_n(sim)
    assert await force.tare_relative_n() == pytest.approx(f2 - f1, abs=FORCE_TOLERANCE_N)
    reading = (await settled(force.sensor.read)).force_n()
    assert reading == pytest.approx(f2 - f1 if force.tare_moves_reading else f2, abs=FORCE_TOLERANCE_N)


async def _ramp(
    sim: SimulatedRig, tx: ModbusTransmitter, *, rate_n_per_s: float, duration_s: float
) -> tuple[float, float]:
    """Raise the true force at `rate_n_per_s` for `duration_s` of experiment time while polling.

    The force follows experiment time continuously: it is set at every sensor sample the transmitter takes, so
    the ramp has no steps whatever the polling rate (a step would rightly pass the creep tracker as a real
    change). Returns the change (reading, truth).
    """
    start_reading = (await settled(tx.read)).force_n()
    model = sim.model
    base_n, t0 = truth_n(sim), sim.clock.now()
    sample = model.sensor_force_n

    def ramped(channel: str = "loadcell") -> float:
        elapsed = min(sim.clock.now() - t0, duration_s)
        model.pin_pressure_kpa = pressure_for_n(sim, base_n + rate_n_per_s * elapsed)
        return sample(channel)

    setattr(model, "sensor_force_n", ramped)  # noqa: B010 (mypy refuses assigning to a method)
    try:
        while sim.clock.now() - t0 < duration_s:
            await tx.read()
    finally:
        delattr(model, "sensor_force_n")
    end_reading = (await settled(tx.read)).force_n()
    return end_reading - start_reading, truth_n(sim) - base_n


async def test_factory_tracking_hides_a_slow_force_ramp_until_verify_safe(
    sim: SimulatedRig, transmitter: ModbusTransmitter
) -> None:
    """The trap of devices.md §1: zero and creep tracking cancel a real force that grows slowly (a deposit)."""
    sim.clock.set_speed(250.0)  # 250 experiment seconds per ramp in about 1 wall second
    sim.model.pin_pressure_kpa = pressure_for_n(sim, 11.0)
    await settled(transmitter.read)
    # 2 mN/s, below the factory creep band of 5 divisions (5 mN) per second: 0.5 N over the ramp
    seen, real = await _ramp(sim, transmitter, rate_n_per_s=0.002, duration_s=250.0)
    assert real == pytest.approx(0.5, abs=0.01)
    assert abs(seen) < 0.3 * real, f"factory tracking should hide the ramp: read {seen:.3f} N of {real:.3f} N"

    settings = await transmitter.verify_safe()
    assert [settings[k] for k in ("zero_tracking_range", "zero_tracking_time")] == [0, 0]
    assert [settings[k] for k in ("creep_tracking_range", "creep_tracking_time")] == [0, 0]
    lc = sim.loadcell  # the device itself, not what the driver says about it
    assert (lc.zero_tracking_range_d, lc.zero_tracking_time_ds, lc.creep_tracking_range_d) == (0, 0, 0)
    assert lc.creep_tracking_time_ds == 0
    seen, real = await _ramp(sim, transmitter, rate_n_per_s=0.002, duration_s=250.0)
    assert seen == pytest.approx(real, abs=0.06), f"after verify_safe the ramp must show: {seen:.3f} of {real:.3f} N"


# ------------------------------------------------------------------------------------------------ press


def platen_um(sim: SimulatedRig) -> float:
    """Where the model's platen really is."""
    return float(sim.model.state()["platen_um"])


async def _done(press: LeadshinePR) -> bool:
    status = await press.status()
    return status.done and not status.moving


async def test_press_refuses_moves_until_limits_are_verified_then_reads_them_back(
    press: LeadshinePR, sim: SimulatedRig
) -> None:
    assert isinstance(press, Press)
    await press.set_motion_limits(velocity_rpm=60, accel_ms_per_krpm=100, decel_ms_per_krpm=100)
    with pytest.raises(RuntimeError, match="no verified travel limits"):
        await press.move_relative_um(10.0)
    assert not sim.stepper.limits_enabled
    safe = await press.verify_safe(*TRAVEL_UM)
    assert safe["travel_limits_pulses"] == (-1600, 3200)
    assert sim.stepper.limits_enabled and sim.stepper.limits_pulses == (-1600, 3200)
    assert await press.travel_limits_um() == (True, -1000.0, 2000.0)
    status = await press.status()
    assert (status.enabled, status.fault, status.alarm_code) == (True, False, 0)
    await press.enable()  # no alarm, enabled: accepted


async def test_relative_and_absolute_moves_move_the_platen_by_the_commanded_um(
    ready_press: LeadshinePR, sim: SimulatedRig
) -> None:
    start = platen_um(sim)
    assert await ready_press.move_relative_um(100.0) == 160
    assert await wait_until(lambda: _done(ready_press))
    assert platen_um(sim) - start == pytest.approx(100.0, abs=1e-6)
    assert await ready_press.position_um() == pytest.approx(start + 100.0)

    assert await ready_press.move_relative_um(-37.5) == -60
    assert await wait_until(lambda: _done(ready_press))
    assert platen_um(sim) - start == pytest.approx(62.5, abs=1e-6)

    assert await ready_press.move_absolute_um(250.0) == 400
    assert await wait_until(lambda: _done(ready_press))
    assert platen_um(sim) == pytest.approx(250.0, abs=1e-6)
    assert await ready_press.position_um() == pytest.approx(250.0)


async def test_status_reports_moving_then_done(ready_press: LeadshinePR, sim: SimulatedRig) -> None:
    await ready_press.set_motion_limits(velocity_rpm=1, accel_ms_per_krpm=100, decel_ms_per_krpm=100)
    await ready_press.move_relative_um(150.0)  # 1 rpm = 33 µm/s: several experiment seconds
    moving = await ready_press.status()
    assert (moving.moving, moving.done, moving.enabled, moving.fault) == (True, False, True, False)
    assert 0.0 <= moving.position_um < 150.0
    assert await wait_until(lambda: _done(ready_press), polls=1000)
    done = await ready_press.status()
    assert (done.moving, done.done, done.position_um) == (False, True, 150.0)
    assert platen_um(sim) == pytest.approx(150.0, abs=1e-6)


async def test_emergency_stop_halts_a_move_where_it_is(ready_press: LeadshinePR, sim: SimulatedRig) -> None:
    await ready_press.set_motion_limits(velocity_rpm=1, accel_ms_per_krpm=100, decel_ms_per_krpm=100)
    await ready_press.move_relative_um(1000.0)
    assert await wait_until(lambda: _moved_some(ready_press))
    await ready_press.emergency_stop()
    stopped = await ready_press.status()
    assert (stopped.moving, stopped.done, stopped.fault) == (False, False, False)
    assert not sim.model.axis.moving
    here = platen_um(sim)
    assert 0.0 < here < 1000.0
    await asyncio.sleep(0.1)  # one experiment second: at 33 µm/s a running drive would move ~33 µm
    assert platen_um(sim) == pytest.approx(here, abs=1.0)
    assert await ready_press.position_um() == pytest.approx(stopped.position_um)


async def _moved_some(press: LeadshinePR) -> bool:
    return await press.position_um() > 5.0


async def test_moves_beyond_the_travel_limits_are_refused_before_anything_is_sent(
    ready_press: LeadshinePR, sim: SimulatedRig
) -> None:
    line = sim.lines["rs485"]
    pr0_before = dict(sim.stepper.pr0)
    frames_before = line.requests_seen
    with pytest.raises(ValueError, match=r"press: target 2010\.0 µm .* beyond the upper travel limit 2000\.0 µm"):
        await ready_press.move_absolute_um(2010.0)
    assert line.requests_seen == frames_before  # not one frame on the wire
    with pytest.raises(ValueError, match=r"beyond the lower travel limit -1000\.0 µm; nothing was sent"):
        await ready_press.move_relative_um(-1000.625)
    assert line.requests_seen == frames_before + 2  # only the status and position reads
    assert sim.stepper.pr0 == pr0_before
    assert not sim.model.axis.moving and platen_um(sim) == 0.0


# ------------------------------------------------------------------------------------------ potentiostat


async def test_verify_safe_sets_high_z_off_state_so_the_cell_is_no_longer_shorted(
    smu: Keithley2450, sim: SimulatedRig
) -> None:
    assert isinstance(smu, Potentiostat)
    # a 2450 powers up in NORMAL: off means a 0 V source across the cell
    assert sim.potentiostat.state.off_mode["CURR"] == "NORM"
    assert sim.model.source_mode == "short"
    await smu.configure_galvanostatic(GalvanostaticConfig(current_a=-1e-4, voltage_limit_v=3.0))
    with pytest.raises(UnsafeSetting, match=r"potentiostat: :OUTP ON: verify_safe\(\) has not passed"):
        await smu.output(True)
    assert not sim.potentiostat.state.output_on
    safety = await smu.verify_safe(2.5)
    assert (safety.output_off_mode, safety.voltage_limit_v, safety.output_on, safety.errors) == (
        "HIMP",
        2.5,
        False,
        (),
    )
    assert sim.potentiostat.state.off_mode["CURR"] == "HIMP"
    assert sim.potentiostat.state.voltage_limit_v == 2.5
    assert sim.model.source_mode == "open"
    identity = await smu.identify()
    assert (identity.vendor, identity.model) == ("KEITHLEY INSTRUMENTS", "MODEL 2450")


async def _run_current(smu: Keithley2450, sim: SimulatedRig, current_a: float, reads: int) -> tuple[float, float]:
    """Source `current_a` for `reads` readings; returns the shortest and longest time it can have been on."""
    clock = sim.clock
    before_on = clock.now()
    await smu.output(True)
    after_on = clock.now()
    for _ in range(reads):
        reading = await smu.read()
        assert reading.current_a == pytest.approx(current_a)
        assert reading.valid and not reading.in_compliance
    before_off = clock.now()
    await smu.output(False)
    after_off = clock.now()
    return before_off - after_on, after_off - before_on


async def test_galvanostatic_plating_passes_i_times_t_into_the_cell(smu: Keithley2450, sim: SimulatedRig) -> None:
    current_a = -0.5e-3 * sim.model.area_cm2  # 0.5 mA/cm², plating (negative, cathodic at the Al electrode)
    await smu.verify_safe(3.0)
    await smu.configure_galvanostatic(GalvanostaticConfig(current_a=current_a, voltage_limit_v=3.0, nplc=1.0))
    plated0, stripped0 = charges(sim)
    shortest_s, longest_s = await _run_current(smu, sim, current_a, reads=40)
    plated1, stripped1 = charges(sim)
    plated = plated1 - plated0
    # the charge is I·t for the time the output was on, which lies between the two brackets
    assert abs(current_a) * shortest_s <= plated <= abs(current_a) * longest_s
    assert stripped1 == stripped0
    assert sim.model.source_mode == "open"  # output off in HIMP: no current


def charges(sim: SimulatedRig) -> tuple[float, float]:
    """(plated, stripped) coulombs of the model, brought up to now."""
    state = sim.model.state()
    return float(state["plated_c"]), float(state["stripped_c"])


async def _voltage_trend(smu: Keithley2450) -> tuple[float, float]:
    """Two readings half an experiment second apart: (first, second) voltage."""
    first = await smu.read()
    await asyncio.sleep(0.05)
    second = await smu.read()
    return first.voltage_v(), second.voltage_v()


async def test_sign_convention_negative_plates_positive_strips(smu: Keithley2450, sim: SimulatedRig) -> None:
    """Negative current is cathodic at the working electrode (plates Na), positive is anodic (strips)."""
    i_a = 0.5e-3 * sim.model.area_cm2
    await smu.verify_safe(3.0)
    await smu.configure_galvanostatic(GalvanostaticConfig(current_a=-i_a, voltage_limit_v=3.0))
    await smu.output(True)
    try:
        before_plating = charges(sim)
        plating = await smu.read()
        v_a, v_b = await _voltage_trend(smu)
        after_plating = charges(sim)
        await smu.set_current_a(+i_a)
        before_stripping = charges(sim)  # the model has run up to the switch
        stripping = await smu.read()
        v_c, v_d = await _voltage_trend(smu)
        after_stripping = charges(sim)
    finally:
        await smu.output(False)
    assert plating.current_a == pytest.approx(-i_a) and stripping.current_a == pytest.approx(+i_a)
    assert after_plating[0] > before_plating[0] and after_plating[1] == before_plating[1]
    assert after_stripping[1] > before_stripping[1] and after_stripping[0] == before_stripping[0]
    # voltage is working minus counter electrode: plating drives the Al electrode down, stripping up
    assert v_b < v_a
    assert v_d > v_c


async def test_compliance_flag_when_the_cell_voltage_reaches_the_limit(smu: Keithley2450, sim: SimulatedRig) -> None:
    # stripping pristine Al: nothing to strip, the double layer charges and the voltage runs up to the limit
    # (from 1.6 V to 2.5 V takes about 2 experiment seconds at this current)
    i_a = 0.5e-3 * sim.model.area_cm2
    await smu.verify_safe(2.5)
    await smu.configure_galvanostatic(GalvanostaticConfig(current_a=i_a, voltage_limit_v=2.5))
    await smu.output(True)
    try:
        first = await smu.read()
        assert not first.in_compliance and first.voltage_v() < 2.5
        assert await wait_until(lambda: _in_compliance(smu), polls=300)
        last = await smu.read()
    finally:
        await smu.output(False)
    assert last.in_compliance
    assert last.voltage_v() == pytest.approx(2.5, abs=1e-3)
    assert 0.0 <= last.current_a < i_a  # held at the limit, the source no longer delivers the full current


async def _in_compliance(smu: Keithley2450) -> bool:
    return (await smu.read()).in_compliance
