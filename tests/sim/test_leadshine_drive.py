"""The simulated Leadshine PR-mode stepper drive (devices.md §3) on the wire, moving the model's press."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from hardware_sim import LineTiming, ManualClock, RigModel
from hardware_sim.leadshine_drive import LeadshineDrive
from hardware_sim.rtu_line import RtuLineServer
from tests.sim.rtu_client import (
    RawRtu,
    frame,
    int32,
    quiet_model,
    read_reply_len,
    read_req,
    registers,
    words,
    write1_req,
    writen_req,
)

UM_PER_PULSE = 0.625
FAULT, ENABLED, RUNNING, COMMAND_DONE, PATH_DONE, HOMING_DONE = 1, 2, 4, 16, 32, 64
ABSOLUTE, RELATIVE, VELOCITY = 0x0001, 0x0041, 0x0002
RUN_PR0, HOMING, SET_ZERO, ESTOP = 0x0010, 0x0020, 0x0021, 0x0040


@dataclass
class Rig:
    """A drive on its own line, with the client and the model's clock."""

    drive: LeadshineDrive
    model: RigModel
    clock: ManualClock
    client: RawRtu

    async def write(self, address: int, values: list[int]) -> None:
        """FC16 write; fails unless the normal reply comes back."""
        reply = await self.client.ask(writen_req(2, address, values), 8)
        assert reply == frame(writen_req(2, address, values)[:6]), reply.hex(" ")

    async def write1(self, address: int, value: int) -> None:
        """FC06 write; fails unless echoed."""
        req = write1_req(2, address, value)
        assert await self.client.ask(req, 8) == req

    async def read(self, address: int, count: int) -> list[int]:
        """FC03 read."""
        return registers(await self.client.ask(read_req(2, address, count), read_reply_len(count)))

    async def exception(self, request: bytes) -> int:
        """The exception code the drive answers `request` with."""
        reply = await self.client.ask(request, 5)
        assert reply[1] & 0x80, reply.hex(" ")
        return reply[2]

    async def position(self) -> int:
        """Position counter 0x602C-0x602D."""
        return int32(*await self.read(0x602C, 2))

    async def status(self) -> int:
        """Motion status 0x1003."""
        return (await self.read(0x1003, 1))[0]

    async def alarm(self) -> int:
        """Alarm code 0x2203."""
        return (await self.read(0x2203, 1))[0]

    async def pr0(self, mode: int, target: int, rpm: int = 60, accel: int = 100, decel: int = 100) -> None:
        """Write the PR0 block and trigger it."""
        await self.write(0x6200, [mode, *words(target), rpm & 0xFFFF, accel, decel])
        await self.write1(0x6002, RUN_PR0)


@contextlib.asynccontextmanager
async def _rig(**drive_kwargs: object) -> AsyncIterator[Rig]:
    model, clock = quiet_model()
    drive = LeadshineDrive(model, slave_id=2, **drive_kwargs)  # type: ignore[arg-type]
    async with RtuLineServer(slaves=[drive], timing=LineTiming(enabled=False)) as server:
        client = await RawRtu.open(server.port)
        try:
            yield Rig(drive, model, clock, client)
        finally:
            await client.close()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with _rig() as r:
        yield r


@pytest.fixture
async def closed_loop_rig() -> AsyncIterator[Rig]:
    async with _rig(closed_loop=True, position_error_limit_pulses=400) as r:
        yield r


# --------------------------------------------------------------------- moves


async def test_relative_and_absolute_moves(rig: Rig) -> None:
    assert await rig.status() == ENABLED | COMMAND_DONE | PATH_DONE
    await rig.pr0(RELATIVE, 1600, rpm=120)
    st = await rig.status()
    assert st & RUNNING and not st & (COMMAND_DONE | PATH_DONE)
    assert (await rig.read(0x6002, 1)) == [RUN_PR0]
    rig.clock.advance(3.0)
    assert await rig.position() == 1600
    assert rig.model.platen_um == pytest.approx(1600 * UM_PER_PULSE)
    assert await rig.status() == ENABLED | COMMAND_DONE | PATH_DONE
    assert (await rig.read(0x6002, 1)) == [0]
    await rig.pr0(RELATIVE, 320)
    rig.clock.advance(3.0)
    assert await rig.position() == 1920
    await rig.pr0(ABSOLUTE, -320, rpm=300)
    rig.clock.advance(5.0)
    assert await rig.position() == -320
    assert rig.model.platen_um == pytest.approx(-320 * UM_PER_PULSE)


async def test_move_follows_velocity_and_acceleration(rig: Rig) -> None:
    await rig.pr0(ABSOLUTE, 6400, rpm=60, accel=1, decel=1)  # 3200 pps: about 2 s
    rig.clock.advance(1.0)
    assert await rig.position() == pytest.approx(3200, abs=5)
    assert await rig.status() & RUNNING
    rig.clock.advance(1.1)
    assert await rig.position() == 6400


async def test_accel_register_offsets_are_configurable() -> None:
    async def moved_after(accel_register: int) -> int:
        async with _rig(accel_register=accel_register, decel_register=accel_register + 1) as r:
            await r.write(0x6200, [ABSOLUTE, *words(100_000), 600, 1, 5000, 5000])  # 0x6204=1, 0x6205=5000
            await r.write1(0x6002, RUN_PR0)
            r.clock.advance(0.2)
            return await r.position()

    assert await moved_after(0x6204) > 5000  # 1 ms per 1000 rpm: at full speed almost at once
    assert await moved_after(0x6205) < 400  # 5000 ms per 1000 rpm: barely started


async def test_velocity_mode_and_emergency_stop(rig: Rig) -> None:
    await rig.pr0(VELOCITY, 0, rpm=-60, accel=1)
    rig.clock.advance(1.0)
    pos = await rig.position()
    assert pos == pytest.approx(-3200, abs=5)
    await rig.write1(0x6002, ESTOP)
    st = await rig.status()
    assert not st & RUNNING and st & COMMAND_DONE and not st & PATH_DONE
    platen = rig.model.platen_um
    rig.clock.advance(1.0)
    assert await rig.position() == pytest.approx(pos, abs=1)
    assert rig.model.platen_um == pytest.approx(platen, abs=1.0)


async def test_estop_stops_a_position_move_where_it_is(rig: Rig) -> None:
    await rig.pr0(ABSOLUTE, 32000, rpm=60)
    rig.clock.advance(1.0)
    await rig.write1(0x6002, ESTOP)
    stopped = await rig.position()
    assert 0 < stopped < 32000
    rig.clock.advance(20.0)
    assert await rig.position() == stopped


async def test_set_zero_and_homing(rig: Rig) -> None:
    await rig.pr0(ABSOLUTE, 1000, rpm=120)
    rig.clock.advance(3.0)
    await rig.write1(0x6002, SET_ZERO)
    assert await rig.position() == 0
    assert rig.model.platen_um == pytest.approx(1000 * UM_PER_PULSE)  # the platen did not move
    assert not await rig.status() & HOMING_DONE
    await rig.write1(0x6002, HOMING)
    assert await rig.status() & RUNNING
    rig.clock.advance(5.0)
    st = await rig.status()
    assert st & HOMING_DONE and not st & RUNNING
    assert await rig.position() == 0
    assert rig.model.platen_um == 0.0


# -------------------------------------------------------------- soft limits


async def test_software_limits_stop_a_move_at_the_limit(rig: Rig) -> None:
    await rig.write(0x6006, [*words(2000), *words(-500)])
    assert await rig.read(0x6006, 4) == [*words(2000), *words(-500)]
    await rig.pr0(ABSOLUTE, 5000, rpm=300)  # limits written but not enabled: goes all the way
    rig.clock.advance(5.0)
    assert await rig.position() == 5000
    await rig.pr0(ABSOLUTE, 0, rpm=300)
    rig.clock.advance(5.0)
    await rig.write1(0x6000, 0x0002)
    assert await rig.read(0x6000, 1) == [0x0002]
    await rig.pr0(ABSOLUTE, 5000, rpm=300)
    rig.clock.advance(5.0)
    assert await rig.position() == 2000
    assert rig.drive.last_move_clamped
    await rig.pr0(RELATIVE, -10_000, rpm=300)
    rig.clock.advance(5.0)
    assert await rig.position() == -500
    await rig.pr0(VELOCITY, 0, rpm=300)
    rig.clock.advance(5.0)
    assert await rig.position() == 2000
    assert await rig.status() & PATH_DONE


# ------------------------------------------------------------------- alarms


async def test_alarm_fault_latches_blocks_moves_until_reset(rig: Rig) -> None:
    await rig.pr0(ABSOLUTE, 32000, rpm=60)
    rig.clock.advance(0.5)
    rig.drive.faults.set(alarm_code=0x00E0)  # over-current
    assert await rig.alarm() == 0x00E0
    st = await rig.status()
    assert st & FAULT and not st & (ENABLED | RUNNING)
    stopped = await rig.position()
    await rig.pr0(ABSOLUTE, 0)  # acknowledged on the wire but ignored by the drive
    rig.clock.advance(2.0)
    assert await rig.position() == stopped
    assert rig.drive.ignored_triggers == 1
    await rig.write1(0x1801, 0x1111)  # the cause persists: the alarm comes straight back
    assert await rig.alarm() == 0x00E0
    rig.drive.faults.clear()
    assert await rig.alarm() == 0x00E0  # latched
    await rig.write1(0x1801, 0x1111)
    assert await rig.alarm() == 0
    assert await rig.status() & ENABLED
    await rig.pr0(ABSOLUTE, 0, rpm=300)
    rig.clock.advance(5.0)
    assert await rig.position() == 0


async def test_open_loop_loses_steps_silently(rig: Rig) -> None:
    rig.drive.faults.set(lost_steps_fraction=0.25)
    await rig.pr0(ABSOLUTE, 3200, rpm=120)
    rig.clock.advance(3.0)
    assert await rig.position() == 3200  # the counter counts every pulse...
    assert rig.model.platen_um == pytest.approx(0.75 * 3200 * UM_PER_PULSE, rel=0.01)  # ...the platen did not
    assert await rig.alarm() == 0
    assert rig.drive.position_error_pulses == pytest.approx(800, abs=5)


async def test_closed_loop_raises_position_error_on_lost_steps(closed_loop_rig: Rig) -> None:
    rig = closed_loop_rig
    rig.drive.faults.set(lost_steps_fraction=0.25)
    await rig.pr0(ABSOLUTE, 3200, rpm=120)
    for _ in range(30):
        rig.clock.advance(0.1)
        if await rig.alarm():
            break
    assert await rig.alarm() == 0x0180
    st = await rig.status()
    assert st & FAULT and not st & RUNNING
    counter = await rig.position()
    assert 1600 <= counter < 3200  # stopped once the lag passed 400 pulses
    assert counter - rig.model.axis.actual_pulses > 400
    rig.drive.faults.clear()
    await rig.write1(0x1801, 0x1111)  # reset re-synchronises counter and encoder
    assert await rig.alarm() == 0
    assert rig.drive.position_error_pulses == pytest.approx(0, abs=1)


async def test_eeprom_saves_are_counted_and_unknown_words_refused(rig: Rig) -> None:
    assert rig.drive.eeprom_writes == 0
    await rig.write1(0x1801, 0x2211)
    await rig.write1(0x1801, 0x2211)
    assert rig.drive.eeprom_writes == 2
    assert await rig.exception(write1_req(2, 0x1801, 0x1234)) == 3
    assert await rig.exception(write1_req(2, 0x6200, 0x0007)) == 3  # unknown PR mode
    assert await rig.exception(write1_req(2, 0x6002, 0x0099)) == 3  # unknown trigger
    assert await rig.exception(writen_req(2, 0x602C, words(5))) == 2  # position is read-only
    assert await rig.exception(read_req(2, 0x7000, 1)) == 2
    assert rig.drive.eeprom_writes == 2


async def test_fault_stuck_freezes_position_and_status(rig: Rig) -> None:
    rig.drive.faults.set(stuck=True)
    assert await rig.position() == 0
    await rig.pr0(ABSOLUTE, 3200, rpm=120)
    rig.clock.advance(0.5)
    assert await rig.position() == 0
    assert await rig.status() == ENABLED | COMMAND_DONE | PATH_DONE
    rig.drive.faults.clear()
    assert await rig.position() > 0
