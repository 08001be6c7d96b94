"""Fixtures for the drivers-against-simulator tests: an in-process simulated rig and our drivers on its wires.

The drivers are exactly the classes a real rig uses; only the port strings (`socket://127.0.0.1:PORT`) and the
VISA resource (`TCPIP0::127.0.0.1::PORT::SOCKET`) come from the simulator. Every fixture closes what it opened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from drivers.interfaces import ForceReading, ForceStatus
from drivers.keithley2450 import Keithley2450
from drivers.leadshine_pr import LeadshinePR
from drivers.mark10 import Mark10
from drivers.modbus_bus import ModbusBus
from drivers.modbus_transmitter import ModbusTransmitter
from hardware_sim.rig import LOADCELL_ID, STEPPER_ID, SimulatedRig

#: Experiment seconds per wall second in these tests: fast enough for plating and slow moves, slow enough
#: that one driver call costs well under an experiment second.
SPEED = 10.0
BAUD = 115200
#: Short per-call timeouts keep the fault tests quick; they are still explicit, as on hardware.
BUS_TIMEOUT_S = 0.2
BUS_RETRIES = 1
GAUGE_TIMEOUT_S = 0.3
SMU_TIMEOUT_S = 0.5
CAPACITY_N = 100.0
TRAVEL_UM = (-1000.0, 2000.0)


@pytest.fixture
async def sim() -> AsyncIterator[SimulatedRig]:
    """A started simulated rig: load cell (id 1) and press drive (id 2) on one RS-485 line, gauge, 2450."""
    rig = SimulatedRig(speed=SPEED, baudrate=BAUD, line_timing=True)
    await rig.start()
    try:
        yield rig
    finally:
        await rig.close()


@pytest.fixture
async def bus(sim: SimulatedRig) -> AsyncIterator[ModbusBus]:
    """One Modbus RTU master on the simulated RS-485 line, shared by the load cell and the press."""
    line = ModbusBus(
        port=sim.lines["rs485"].url, baudrate=BAUD, timeout_s=BUS_TIMEOUT_S, retries=BUS_RETRIES, name="rs485"
    )
    try:
        yield line
    finally:
        await line.close()


@pytest.fixture
async def transmitter(bus: ModbusBus) -> AsyncIterator[ModbusTransmitter]:
    """The Modbus load-cell transmitter, connected, factory settings untouched."""
    tx = ModbusTransmitter(bus=bus, device_id=LOADCELL_ID, name="load cell", unit="N", capacity_n=CAPACITY_N)
    await tx.connect()
    try:
        yield tx
    finally:
        await tx.close()


@pytest.fixture
async def gauge(sim: SimulatedRig) -> AsyncIterator[Mark10]:
    """The Mark-10 gauge, connected."""
    g = Mark10(name="force gauge", url=sim.gauge.url, timeout_s=GAUGE_TIMEOUT_S, capacity_n=CAPACITY_N)
    await g.connect()
    try:
        yield g
    finally:
        await g.close()


@pytest.fixture
async def press(bus: ModbusBus) -> AsyncIterator[LeadshinePR]:
    """The Leadshine drive, connected; no limits verified yet."""
    p = LeadshinePR(bus=bus, device_id=STEPPER_ID, name="press", um_per_pulse=0.625)
    await p.connect()
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def ready_press(press: LeadshinePR) -> LeadshinePR:
    """The press with verified travel limits and motion limits (60 rpm: 2 mm/s)."""
    await press.verify_safe(*TRAVEL_UM)
    await press.set_motion_limits(velocity_rpm=60, accel_ms_per_krpm=100, decel_ms_per_krpm=100)
    return press


@pytest.fixture
async def smu(sim: SimulatedRig) -> AsyncIterator[Keithley2450]:
    """The Keithley 2450 over pyvisa-py on the simulator's raw socket, connected."""
    k = Keithley2450(name="potentiostat", resource=sim.potentiostat.resource, timeout_s=SMU_TIMEOUT_S)
    await k.connect()
    try:
        yield k
    finally:
        await k.close()


async def settled(read: Callable[[], Awaitable[ForceReading]], *, attempts: int = 100) -> ForceReading:
    """The first reading that is not UNSTABLE (the transmitter's filter settles after a load step)."""
    reading = await read()
    for _ in range(attempts):
        if not reading.status & ForceStatus.UNSTABLE:
            return reading
        await asyncio.sleep(0.01)
        reading = await read()
    return reading


async def wait_until(check: Callable[[], Awaitable[bool]], *, polls: int = 500, interval_s: float = 0.01) -> bool:
    """Poll `check` until it holds; False after `polls` tries (a hang guard, not a timing assertion)."""
    for _ in range(polls):
        if await check():
            return True
        await asyncio.sleep(interval_s)
    return False
