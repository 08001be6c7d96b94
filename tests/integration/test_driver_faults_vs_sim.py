"""Faults injected into the simulator end in a named driver error or an invalid reading, never a wrong number.

Each fault is set on the simulated device (`sim.faults[...]`, the same objects the control port sets from another
process). The assertions read the error class and its message: the device, the register or command, and what
came back. After the fault clears, the same driver object must work again (reconnect included).
"""

from __future__ import annotations

import math

import pytest

from drivers.errors import (
    DeviceAlarm,
    DeviceDisconnected,
    DeviceExceptionReply,
    DeviceProtocolError,
    DeviceTimeout,
    InvalidReadingError,
    UnsafeSetting,
)
from drivers.interfaces import ForceReading, ForceStatus, GalvanostaticConfig
from drivers.keithley2450 import Keithley2450
from drivers.leadshine_pr import LeadshinePR
from drivers.mark10 import Mark10
from drivers.modbus_transmitter import ModbusTransmitter
from hardware_sim.rig import SimulatedRig
from tests.integration.conftest import settled, wait_until

GROSS = r"load cell: FC03 read 0x0050-0x0051 \(gross weight\) on slave 1 via rs485"


def assert_invalid(reading: ForceReading, *flags: ForceStatus) -> None:
    """An unusable reading: flagged, no number, and `force_n()` refuses it."""
    assert not reading.valid
    for flag in flags:
        assert reading.status & flag, reading
    with pytest.raises(InvalidReadingError, match=f"force reading #{reading.seq} is not usable"):
        reading.force_n()


def pin_force(sim: SimulatedRig, force_n: float) -> None:
    """Hold the stack at `force_n`."""
    sim.model.pin_pressure_kpa = force_n / sim.model.area_m2 / 1e3


# ---------------------------------------------------------------------------------- load cell (Modbus RTU)


async def test_silent_load_cell_is_a_timeout_naming_the_register_and_the_press_still_answers(
    sim: SimulatedRig, transmitter: ModbusTransmitter, ready_press: LeadshinePR
) -> None:
    sim.faults["loadcell"].set(no_reply=True)
    with pytest.raises(DeviceTimeout, match=GROSS + r": no reply \(nothing came back\) within 0\.200 s") as caught:
        await transmitter.read()
    assert caught.value.device == "load cell" and caught.value.reply is None
    # the shared line is not poisoned: the press on slave 2 answers between the load cell's timeouts
    assert await ready_press.position_um() == 0.0
    sim.faults["loadcell"].clear()
    assert (await settled(transmitter.read)).valid


async def test_corrupted_reply_is_a_bad_crc_error_with_the_bytes(
    sim: SimulatedRig, transmitter: ModbusTransmitter
) -> None:
    pin_force(sim, 12.0)
    await settled(transmitter.read)
    sim.faults["loadcell"].set(corrupt=True)
    with pytest.raises(DeviceProtocolError, match=GROSS + ": bad CRC: the frame carries 0x") as caught:
        await transmitter.read()
    # the corrupted frame is in the message, as it came off the wire
    assert isinstance(caught.value.reply, str) and caught.value.reply.startswith("01 03 04")
    sim.faults["loadcell"].clear()
    assert (await settled(transmitter.read)).force_n() == pytest.approx(12.0, abs=0.05)


@pytest.mark.parametrize(("code", "label"), [(2, "illegal data address"), (4, "server device failure")])
async def test_modbus_exception_is_named_with_its_code(
    sim: SimulatedRig, transmitter: ModbusTransmitter, code: int, label: str
) -> None:
    sim.faults["loadcell"].set(modbus_exception=code)
    with pytest.raises(DeviceExceptionReply, match=GROSS + f": Modbus exception {code} \\({label}\\)") as caught:
        await transmitter.read()
    assert caught.value.code == code
    reply = caught.value.reply
    assert isinstance(reply, str) and reply.startswith(f"01 83 {code:02X} ")  # the exception frame, FC 0x83


async def test_exception_on_a_configuration_write_names_that_write(
    sim: SimulatedRig, transmitter: ModbusTransmitter
) -> None:
    sim.faults["loadcell"].set(modbus_exception=4)
    with pytest.raises(DeviceExceptionReply, match=r"FC16 write 0x0005 \(unlock configuration\) <- \[0x5AA5\]"):
        await transmitter.verify_safe()


async def test_overload_bit_makes_the_reading_invalid(sim: SimulatedRig, transmitter: ModbusTransmitter) -> None:
    await transmitter.verify_safe()
    pin_force(sim, 20.0)
    await settled(transmitter.read)
    sim.faults["loadcell"].set(overload=True)
    reading = await transmitter.read()
    assert_invalid(reading, ForceStatus.OVERLOAD)
    assert reading.value_n is None and "status=0x0A" in reading.raw  # b9 set, and shown
    sim.faults["loadcell"].clear()
    assert (await settled(transmitter.read)).force_n() == pytest.approx(20.0, abs=0.05)


async def test_a_real_overload_past_capacity_is_invalid_not_a_big_number(
    sim: SimulatedRig, transmitter: ModbusTransmitter
) -> None:
    await transmitter.verify_safe()
    pin_force(sim, 115.0)  # capacity 100 N: the transmitter sets b9 above 110 %
    reading = await settled(transmitter.read)
    assert_invalid(reading, ForceStatus.OVERLOAD)


async def test_dropped_line_is_disconnected_then_the_same_driver_reconnects(
    sim: SimulatedRig, transmitter: ModbusTransmitter, ready_press: LeadshinePR
) -> None:
    pin_force(sim, 9.0)
    await settled(transmitter.read)
    sim.faults["loadcell"].set(disconnect=True)  # the USB-RS485 adapter is pulled: the whole line goes
    for _ in range(2):  # while it is away, every call fails the same named way (no stale value)
        with pytest.raises(DeviceDisconnected, match=r"load cell: FC03 read 0x0050-0x0051 .*the port went away"):
            await transmitter.read()
    with pytest.raises(DeviceDisconnected, match=r"press: FC03 read 0x602C-0x602D \(position counter\)"):
        await ready_press.position_um()
    sim.faults["loadcell"].clear()
    assert (await settled(transmitter.read)).force_n() == pytest.approx(9.0, abs=0.05)
    assert await ready_press.position_um() == 0.0
    assert transmitter.bus.is_open


# --------------------------------------------------------------------------------------- Mark-10 (ASCII)


async def test_silent_gauge_is_a_timeout_naming_the_query(sim: SimulatedRig, gauge: Mark10) -> None:
    sim.faults["gauge"].set(no_reply=True)
    with pytest.raises(DeviceTimeout, match=r"force gauge: \?: no complete reply line within 0\.3 s"):
        await gauge.read()
    sim.faults["gauge"].clear()
    assert (await gauge.read()).valid


@pytest.mark.parametrize("fault", ["corrupt", "nan"])
async def test_garbled_or_nan_gauge_line_is_an_invalid_reading(sim: SimulatedRig, gauge: Mark10, fault: str) -> None:
    pin_force(sim, 14.0)
    sim.faults["gauge"].set(**{fault: True})
    reading = await gauge.read()
    assert_invalid(reading, ForceStatus.INVALID)
    assert reading.value_n is None and reading.raw  # what came back is kept
    sim.faults["gauge"].clear()
    assert (await gauge.read()).force_n() == pytest.approx(14.0, abs=0.05)


async def test_gauge_overload_is_flagged_and_refused(sim: SimulatedRig, gauge: Mark10) -> None:
    pin_force(sim, 14.0)
    sim.faults["gauge"].set(overload=True)  # the gauge pins its output at 110 % of capacity
    assert_invalid(await gauge.read(), ForceStatus.OVERLOAD)


async def test_gauge_unplugged_is_disconnected_then_reconnects(sim: SimulatedRig, gauge: Mark10) -> None:
    pin_force(sim, 6.0)
    assert (await gauge.read()).valid
    sim.faults["gauge"].set(disconnect=True)
    with pytest.raises(DeviceDisconnected, match=r"force gauge: \?: port socket://127\.0\.0\.1:\d+ failed"):
        await gauge.read()
    sim.faults["gauge"].clear()
    assert (await gauge.read()).force_n() == pytest.approx(6.0, abs=0.05)


# ------------------------------------------------------------------------------------ Keithley 2450 (SCPI)

READ = r':READ\? "defbuffer1", SOUR, READ, REL'


async def _on(smu: Keithley2450, *, current_a: float = -1e-4, voltage_range_v: float | None = None) -> None:
    await smu.verify_safe(3.0)
    config = GalvanostaticConfig(current_a=current_a, voltage_limit_v=3.0, voltage_range_v=voltage_range_v)
    await smu.configure_galvanostatic(config)
    await smu.output(True)


async def test_silent_smu_is_a_timeout_naming_the_command(sim: SimulatedRig, smu: Keithley2450) -> None:
    await _on(smu)
    sim.faults["potentiostat"].set(no_reply=True)
    with pytest.raises(DeviceTimeout, match=f"potentiostat: {READ}: no reply within 0.5 s"):
        await smu.read()
    sim.faults["potentiostat"].clear()
    assert (await smu.read()).valid
    await smu.output(False)


async def test_garbled_smu_reply_is_a_protocol_error(sim: SimulatedRig, smu: Keithley2450) -> None:
    await _on(smu)
    sim.faults["potentiostat"].set(corrupt=True)
    with pytest.raises(DeviceProtocolError, match=f"potentiostat: {READ}: reply is not ASCII"):
        await smu.read()
    sim.faults["potentiostat"].clear()
    assert (await smu.read()).valid
    await smu.output(False)


async def test_overrange_code_from_the_nan_fault_is_an_invalid_reading(sim: SimulatedRig, smu: Keithley2450) -> None:
    await _on(smu)
    sim.faults["potentiostat"].set(nan=True)
    reading = await smu.read()
    await smu.output(False)
    assert reading.overrange and not reading.valid and reading.value_v is None
    assert "9.9E+37" in reading.raw
    with pytest.raises(InvalidReadingError, match="potentiostat reading is not usable"):
        reading.voltage_v()


async def test_a_real_overrange_on_a_fixed_range_is_an_invalid_reading(sim: SimulatedRig, smu: Keithley2450) -> None:
    # the fresh Al electrode sits near 1.6 V: the fixed 200 mV range cannot show it
    await _on(smu, voltage_range_v=0.2)
    reading = await smu.read()
    await smu.output(False)
    assert reading.overrange and reading.value_v is None
    assert reading.current_a == pytest.approx(-1e-4)  # the source value stays a number
    with pytest.raises(InvalidReadingError):
        reading.voltage_v()


async def test_refused_setting_is_an_scpi_error_naming_the_command(sim: SimulatedRig, smu: Keithley2450) -> None:
    await _on(smu)
    with pytest.raises(
        DeviceExceptionReply, match=r"potentiostat: :SOUR:CURR 2: instrument reported error -222"
    ) as caught:
        await smu.set_current_a(2.0)  # beyond the 2450's 1.05 A
    assert caught.value.code == -222
    assert sim.potentiostat.state.current_a == pytest.approx(-1e-4)  # the old current is still sourced
    await smu.output(False)


async def test_forced_compliance_is_flagged(sim: SimulatedRig, smu: Keithley2450) -> None:
    await _on(smu)
    sim.faults["potentiostat"].set(compliance_trip=True)
    reading = await smu.read()
    await smu.output(False)
    assert reading.in_compliance


async def test_dropped_smu_connection_is_disconnected_and_a_reconnect_must_verify_again(
    sim: SimulatedRig, smu: Keithley2450
) -> None:
    await _on(smu)
    sim.faults["potentiostat"].set(disconnect=True)
    with pytest.raises(DeviceDisconnected, match="potentiostat: "):
        await smu.read()
    sim.faults["potentiostat"].clear()
    await smu.output(False)  # reconnects; turning the output off is always allowed
    assert not sim.potentiostat.state.output_on
    # the instrument may have been power-cycled meanwhile: output on needs verify_safe on the new connection
    with pytest.raises(UnsafeSetting, match=r"potentiostat: :OUTP ON: verify_safe\(\) has not passed"):
        await smu.output(True)
    await _on(smu)
    assert math.isfinite((await smu.read()).voltage_v())
    await smu.output(False)


# ------------------------------------------------------------------------------------ Leadshine drive


async def test_stepper_alarm_is_reported_never_silently_reset(sim: SimulatedRig, ready_press: LeadshinePR) -> None:
    sim.faults["stepper"].set(alarm_code=0x00E0)
    status = await ready_press.status()
    assert (status.fault, status.enabled, status.alarm_code) == (True, False, 0x00E0)
    with pytest.raises(
        DeviceAlarm, match=r"press: read 0x2203 \(alarm code\) on slave 2: alarm 0x00E0 \(over-current\)"
    ):
        await ready_press.enable()
    with pytest.raises(DeviceAlarm) as caught:
        await ready_press.move_relative_um(50.0)  # the drive would ack and ignore it: refused instead
    assert caught.value.code == 0x00E0
    assert sim.stepper.ignored_triggers == 0 and sim.model.platen_um == 0.0
    with pytest.raises(DeviceAlarm, match="over-current"):
        await ready_press.verify_safe(-1000.0, 2000.0)
    # the cause goes away, the alarm stays latched until someone resets it on purpose
    sim.faults["stepper"].clear()
    with pytest.raises(DeviceAlarm, match="0x00E0"):
        await ready_press.enable()
    await ready_press.reset_alarm()
    await ready_press.enable()


async def test_lost_steps_on_a_closed_loop_drive_raise_position_error_0180(
    sim: SimulatedRig, ready_press: LeadshinePR
) -> None:
    sim.stepper.closed_loop = True  # a CL57RS-class drive with an encoder
    sim.faults["stepper"].set(lost_steps_fraction=0.5)
    await ready_press.move_relative_um(1000.0)  # 1600 pulses, half of them lost: 800 > the 400-pulse window
    assert await wait_until(lambda: _faulted(ready_press))
    status = await ready_press.status()
    assert (status.fault, status.moving, status.alarm_code) == (True, False, 0x0180)
    assert sim.model.platen_um < 0.6 * status.position_um  # the counter says more than the platen did
    with pytest.raises(DeviceAlarm, match=r"alarm 0x0180 \(position error\)") as caught:
        await ready_press.enable()
    assert caught.value.code == 0x0180


async def _faulted(press: LeadshinePR) -> bool:
    return (await press.status()).fault


async def test_stepper_exception_names_the_pr0_block_and_nothing_moves(
    sim: SimulatedRig, ready_press: LeadshinePR
) -> None:
    sim.faults["stepper"].set(modbus_exception=1)
    with pytest.raises(DeviceExceptionReply, match=r"press: FC03 read 0x1003 \(motion status\) on slave 2") as caught:
        await ready_press.move_absolute_um(100.0)
    assert caught.value.code == 1 and "illegal function" in str(caught.value)
    assert not sim.model.axis.moving


async def test_silent_stepper_times_out_on_the_move_and_nothing_moves(
    sim: SimulatedRig, ready_press: LeadshinePR
) -> None:
    sim.faults["stepper"].set(no_reply=True)
    with pytest.raises(
        DeviceTimeout, match=r"press: FC03 read 0x1003 \(motion status\) on slave 2 via rs485: no reply"
    ):
        await ready_press.move_absolute_um(100.0)
    assert not sim.model.axis.moving
