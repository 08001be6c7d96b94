"""After a dropped link, the drivers re-find the port and refuse to act on an unverified device (issue 9, row 6).

The bus counts its openings (`link_generation`); a drive verified on an earlier opening refuses every move with
`DeviceDisconnected` and sends nothing until its travel limits are read back again. The simulator is the judge:
its drive logs every run it executed.
"""

from __future__ import annotations

import pytest

from drivers.errors import DeviceDisconnected
from drivers.leadshine_pr import LeadshinePR
from drivers.modbus_bus import ModbusBus
from drivers.modbus_transmitter import ModbusTransmitter
from hardware_sim.rig import SimulatedRig
from tests.integration.conftest import TRAVEL_UM, settled


async def drop_and_restore(sim: SimulatedRig, transmitter: ModbusTransmitter) -> None:
    sim.faults["loadcell"].set(disconnect=True)
    with pytest.raises(DeviceDisconnected):
        await transmitter.read()
    sim.faults["loadcell"].clear()
    await settled(transmitter.read)  # the load cell's read re-opens the shared port


async def test_a_drive_verified_before_the_link_dropped_moves_nothing_until_it_is_verified_again(
    sim: SimulatedRig, bus: ModbusBus, transmitter: ModbusTransmitter, ready_press: LeadshinePR
) -> None:
    await ready_press.move_absolute_um(10.0)
    runs = sim.stepper.runs_executed
    opened = bus.link_generation
    assert not ready_press.reverify_needed
    await drop_and_restore(sim, transmitter)
    assert bus.link_generation > opened
    sim.stepper.power_cycle()  # the drive lost its limits with the power
    assert ready_press.reverify_needed
    with pytest.raises(DeviceDisconnected, match=r"press: move: the port of rs485 was re-opened .*nothing was sent"):
        await ready_press.move_absolute_um(20.0)
    assert sim.stepper.runs_executed == runs  # nothing reached the drive
    await ready_press.verify_safe(*TRAVEL_UM)
    assert not ready_press.reverify_needed and sim.stepper.limits_enabled
    await ready_press.move_absolute_um(20.0)
    assert sim.stepper.runs_executed == runs + 1
    assert sim.stepper.run_log[-1][2]  # with the limits on


async def test_the_load_cell_says_when_it_needs_verifying_again(
    sim: SimulatedRig, transmitter: ModbusTransmitter
) -> None:
    assert not transmitter.reverify_needed  # never verified: nothing to repeat
    await transmitter.verify_safe()
    assert not transmitter.reverify_needed
    await drop_and_restore(sim, transmitter)
    sim.loadcell.power_cycle()
    assert transmitter.reverify_needed and sim.loadcell.zero_tracking_range_d != 0
    await transmitter.verify_safe()
    assert not transmitter.reverify_needed and sim.loadcell.zero_tracking_range_d == 0


async def test_the_bus_refinds_a_line_that_came_back_under_a_new_path_by_usb_serial(sim: SimulatedRig) -> None:
    line = sim.lines["rs485"]
    bus = ModbusBus(port=line.url, timeout_s=0.2, retries=1, usb_serial=line.usb_serial, port_finder=sim.serial_ports)
    tx = ModbusTransmitter(bus=bus, device_id=1, name="load cell", unit="N", capacity_n=100.0)
    await tx.connect()
    try:
        await settled(tx.read)
        old = line.url
        await line.reopen()  # re-plugged: a new path, the old one refuses connections
        assert line.url != old
        with pytest.raises(DeviceDisconnected):
            await tx.read()  # the old connection is gone
        assert (await settled(tx.read)).valid  # re-found by its serial number
        assert bus.port == line.url
    finally:
        await tx.close()
