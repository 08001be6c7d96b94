"""LeadshinePR: byte-exact PR-mode conversations with the stepper drive of devices.md §3."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest

from drivers.errors import DeviceAlarm, DeviceError, DeviceExceptionReply, DeviceTimeout, UnsafeSetting
from drivers.interfaces import Press
from drivers.leadshine_pr import LEADSHINE_ALARMS, LeadshinePR
from drivers.modbus_bus import ModbusBus
from tests.drivers.rtu_frames import read_reply, read_request, rtu, write_multiple, write_single
from tests.support.expected_protocol import ScriptedPeer, expected_protocol

Script = Sequence[tuple[bytes, bytes | None]]
ID = 2


def read(address: int, *values: int) -> tuple[bytes, bytes]:
    """An FC03 exchange on the drive's slave id."""
    return read_request(ID, address, len(values)), read_reply(ID, *values)


def words(value: int) -> tuple[int, int]:
    """int32 as (high, low) registers, computed independently of the driver."""
    value &= 0xFFFFFFFF
    return value >> 16, value & 0xFFFF


# -100 µm .. 1000 µm at 0.625 µm/pulse = -160 .. 1600 pulses.
LIMITS = [
    write_multiple(ID, 0x6006, *words(1600), *words(-160)),
    write_single(ID, 0x6000, 0x0002),
    read(0x6000, 0x0002),
    read(0x6006, *words(1600), *words(-160)),
]
MOTION = [write_multiple(ID, 0x6203, 60, 100, 200)]
RUN_PR0 = write_single(ID, 0x6002, 0x0010)
READY = read(0x1003, 0x0032)  # enabled, command done, path done: every move checks this first
ESTOP = write_single(ID, 0x6002, 0x0040)


class Rig:
    """A drive connected to a scripted peer."""

    def __init__(self, peer: ScriptedPeer, press: LeadshinePR) -> None:
        self.peer = peer
        self.press = press


@contextlib.asynccontextmanager
async def session(
    script: Script,
    *,
    retries: int = 0,
    timeout_s: float = 0.3,
    check_extra_s: float = 0.05,
    **options: object,
) -> AsyncIterator[Rig]:
    """A drive on slave 2 of a fresh bus whose peer must see exactly `script`."""
    async with expected_protocol(script, check_extra_s=check_extra_s) as peer:
        bus = ModbusBus(port=peer.serial_url, baudrate=38400, timeout_s=timeout_s, retries=retries, name="bus0")
        press = LeadshinePR(bus=bus, device_id=ID, **options)  # type: ignore[arg-type]
        await press.connect()
        try:
            yield Rig(peer, press)
        finally:
            await press.close()


async def configure(press: LeadshinePR) -> None:
    await press.set_travel_limits_um(-100.0, 1000.0)
    await press.set_motion_limits(velocity_rpm=60, accel_ms_per_krpm=100, decel_ms_per_krpm=200)


def test_is_a_press() -> None:
    press = LeadshinePR(bus=ModbusBus(port="socket://127.0.0.1:1"))
    assert isinstance(press, Press)
    assert press.um_per_pulse == 0.625


# ------------------------------------------------------------------------------------------- limits


async def test_travel_limits_are_written_enabled_and_read_back() -> None:
    script = [*LIMITS, read(0x6000, 0x0002), read(0x6006, *words(1600), *words(-160))]
    async with session(script) as rig:
        await rig.press.set_travel_limits_um(-100.0, 1000.0)
        assert await rig.press.travel_limits_um() == (True, -100.0, 1000.0)


async def test_travel_limits_round_inwards_to_whole_pulses() -> None:
    async with session(LIMITS) as rig:
        await rig.press.set_travel_limits_um(-100.5, 1000.6)  # -160.8 .. 1600.96 pulses


@pytest.mark.parametrize(
    ("readback", "register", "value"),
    [
        ((0x0002, (*words(1500), *words(-160))), "0x6006", "1500"),
        ((0x0002, (*words(1600), *words(-200))), "0x6008", "-200"),
        ((0x0000, (*words(1600), *words(-160))), "0x6000", "not enabled"),
    ],
)
async def test_limit_readback_mismatch_is_unsafe_and_blocks_moves(
    readback: tuple[int, tuple[int, ...]], register: str, value: str
) -> None:
    control, limit_words = readback
    script = [*LIMITS[:2], read(0x6000, control), read(0x6006, *limit_words), *MOTION]
    async with session(script) as rig:
        with pytest.raises(UnsafeSetting) as caught:
            await rig.press.set_travel_limits_um(-100.0, 1000.0)
        assert register in str(caught.value) and value in str(caught.value)
        await rig.press.set_motion_limits(velocity_rpm=60, accel_ms_per_krpm=100, decel_ms_per_krpm=200)
        with pytest.raises(RuntimeError, match="no verified travel limits"):
            await rig.press.move_absolute_um(10.0)


async def test_moves_are_refused_before_any_limits_and_nothing_is_sent() -> None:
    async with session([]) as rig:
        with pytest.raises(RuntimeError, match="travel limits"):
            await rig.press.move_absolute_um(10.0)
        with pytest.raises(RuntimeError, match="travel limits"):
            await rig.press.move_relative_um(10.0)


async def test_moves_are_refused_without_motion_limits() -> None:
    async with session(LIMITS) as rig:
        await rig.press.set_travel_limits_um(-100.0, 1000.0)
        with pytest.raises(RuntimeError, match="set_motion_limits"):
            await rig.press.move_absolute_um(10.0)


# ------------------------------------------------------------------------------------------- motion


async def test_absolute_move_writes_one_pr0_block_then_triggers() -> None:
    block = write_multiple(ID, 0x6200, 0x0001, *words(800), 60, 100, 200)
    assert block[0].startswith(bytes.fromhex("02 10 62 00 00 06 0C 00 01 00 00 03 20"))
    async with session([*LIMITS, *MOTION, READY, block, RUN_PR0]) as rig:
        await configure(rig.press)
        assert await rig.press.move_absolute_um(500.0) == 800


async def test_relative_move_reads_position_then_writes_block_and_triggers() -> None:
    script = [
        *LIMITS,
        *MOTION,
        READY,
        read(0x602C, *words(800)),
        write_multiple(ID, 0x6200, 0x0041, *words(-160), 60, 100, 200),
        RUN_PR0,
    ]
    async with session(script) as rig:
        await configure(rig.press)
        assert await rig.press.move_relative_um(-100.0) == -160


async def test_absolute_target_beyond_upper_limit_sends_nothing() -> None:
    async with session([*LIMITS, *MOTION]) as rig:
        await configure(rig.press)
        with pytest.raises(ValueError, match=r"upper travel limit 1000\.0 µm"):
            await rig.press.move_absolute_um(1000.7)


async def test_relative_target_beyond_lower_limit_sends_no_motion_command() -> None:
    async with session([*LIMITS, *MOTION, READY, read(0x602C, *words(-100))]) as rig:
        await configure(rig.press)
        with pytest.raises(ValueError, match=r"lower travel limit -100\.0 µm"):
            await rig.press.move_relative_um(-40.0)  # -100 - 64 pulses = -164 < -160


async def test_target_exactly_on_the_limit_is_allowed() -> None:
    block = write_multiple(ID, 0x6200, 0x0001, *words(1600), 60, 100, 200)
    async with session([*LIMITS, *MOTION, READY, block, RUN_PR0]) as rig:
        await configure(rig.press)
        assert await rig.press.move_absolute_um(1000.0) == 1600


async def test_moved_accel_decel_registers_split_the_block() -> None:
    script = [
        *LIMITS,
        write_single(ID, 0x6203, 60),
        write_multiple(ID, 0x6205, 100, 200),
        READY,
        write_multiple(ID, 0x6200, 0x0001, *words(16), 60),
        write_multiple(ID, 0x6205, 100, 200),
        RUN_PR0,
    ]
    async with session(script, accel_register=0x6205, decel_register=0x6206) as rig:
        await configure(rig.press)
        assert await rig.press.move_absolute_um(10.0) == 16


async def test_exception_reply_to_the_block_names_it_and_nothing_is_triggered() -> None:
    block = write_multiple(ID, 0x6200, 0x0001, *words(800), 60, 100, 200)
    async with session([*LIMITS, *MOTION, READY, (block[0], rtu("02 90 03"))]) as rig:
        await configure(rig.press)
        with pytest.raises(DeviceExceptionReply, match="0x6200") as caught:
            await rig.press.move_absolute_um(500.0)
    assert caught.value.code == 3


async def test_run_trigger_is_never_retried() -> None:
    block = write_multiple(ID, 0x6200, 0x0041, *words(16), 60, 100, 200)
    script = [*LIMITS, *MOTION, READY, read(0x602C, 0, 0), block, (RUN_PR0[0], None)]
    async with session(script, retries=2, timeout_s=0.1, check_extra_s=0.5) as rig:
        await configure(rig.press)
        with pytest.raises(DeviceTimeout, match="run PR0"):
            await rig.press.move_relative_um(10.0)
    assert rig.peer.received.count(RUN_PR0[0]) == 1


@pytest.mark.parametrize("move", ["absolute", "relative"])
async def test_a_move_on_a_drive_in_alarm_is_refused_before_anything_is_sent(move: str) -> None:
    # a drive in alarm acknowledges the block and the trigger, then ignores them: the move would look done
    script = [*LIMITS, *MOTION, read(0x1003, 0x0011), read(0x2203, 0x00E0)]
    async with session(script) as rig:
        await configure(rig.press)
        with pytest.raises(DeviceAlarm, match=r"press: read 0x2203 .*alarm 0x00E0 \(over-current\)") as caught:
            if move == "absolute":
                await rig.press.move_absolute_um(10.0)
            else:
                await rig.press.move_relative_um(10.0)
    assert caught.value.code == 0x00E0
    assert RUN_PR0[0] not in rig.peer.received


async def test_a_move_on_a_disabled_drive_is_refused_before_anything_is_sent() -> None:
    async with session([*LIMITS, *MOTION, read(0x1003, 0x0030)]) as rig:
        await configure(rig.press)
        with pytest.raises(DeviceError, match=r"0x1003 \(motion status\).*not enabled"):
            await rig.press.move_absolute_um(10.0)
    assert RUN_PR0[0] not in rig.peer.received


async def test_stop_and_emergency_stop_send_0040_and_estop_is_retried() -> None:
    async with session([ESTOP, (ESTOP[0], None), ESTOP], retries=1, timeout_s=0.1) as rig:
        await rig.press.stop()
        await rig.press.emergency_stop()
    assert rig.peer.received == [ESTOP[0]] * 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"velocity_rpm": 0, "accel_ms_per_krpm": 100, "decel_ms_per_krpm": 100},
        {"velocity_rpm": 60, "accel_ms_per_krpm": 70000, "decel_ms_per_krpm": 100},
        {"velocity_rpm": 60.5, "accel_ms_per_krpm": 100, "decel_ms_per_krpm": 100},
    ],
)
async def test_bad_motion_limits_are_refused_before_sending(kwargs: dict[str, object]) -> None:
    async with session([]) as rig:
        with pytest.raises(ValueError):
            await rig.press.set_motion_limits(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------- status, alarms


@pytest.mark.parametrize(("code", "name"), sorted(LEADSHINE_ALARMS.items()))
async def test_enable_reports_an_active_alarm_and_never_resets_it(code: int, name: str) -> None:
    async with session([read(0x2203, code)]) as rig:
        with pytest.raises(DeviceAlarm) as caught:
            await rig.press.enable()
    assert caught.value.code == code
    assert name in str(caught.value) and f"0x{code:04X}" in str(caught.value)
    assert write_single(ID, 0x1801, 0x1111)[0] not in rig.peer.received


async def test_enable_accepts_an_enabled_drive_without_alarm() -> None:
    async with session([read(0x2203, 0), read(0x1003, 0x0032)]) as rig:
        await rig.press.enable()


async def test_enable_reports_a_drive_that_is_not_enabled() -> None:
    async with session([read(0x2203, 0), read(0x1003, 0x0030)]) as rig:
        with pytest.raises(DeviceError, match="not enabled") as caught:
            await rig.press.enable()
    assert not isinstance(caught.value, DeviceAlarm)


async def test_enable_reports_a_fault_bit_as_alarm() -> None:
    async with session([read(0x2203, 0), read(0x1003, 0x0003)]) as rig:
        with pytest.raises(DeviceAlarm, match="fault"):
            await rig.press.enable()


async def test_reset_alarm_writes_1111_to_the_control_word() -> None:
    reset = write_single(ID, 0x1801, 0x1111)
    async with session([reset]) as rig:
        await rig.press.reset_alarm()
    assert rig.peer.received == [reset[0]]


@pytest.mark.parametrize(
    ("raw", "enabled", "moving", "done", "fault"),
    [
        (0x0026, True, True, False, False),
        (0x0032, True, False, True, False),
        (0x0001, False, False, False, True),
    ],
)
async def test_status_decodes_bits_alarm_and_position(
    raw: int, enabled: bool, moving: bool, done: bool, fault: bool
) -> None:
    async with session([read(0x1003, raw), read(0x2203, 0x00F0), read(0x602C, *words(-160))]) as rig:
        status = await rig.press.status()
    assert (status.enabled, status.moving, status.done, status.fault) == (enabled, moving, done, fault)
    assert status.alarm_code == 0x00F0
    assert status.position_um == -100.0
    assert status.raw_status == raw


async def test_position_is_int32_pulses_times_um_per_pulse() -> None:
    async with session([read(0x602C, *words(-3))], um_per_pulse=1.25) as rig:
        assert await rig.press.position_um() == -3.75


async def test_verify_safe_sets_limits_then_checks_alarm_and_status() -> None:
    async with session([*LIMITS, read(0x2203, 0), read(0x1003, 0x0002)]) as rig:
        settings = await rig.press.verify_safe(-100.0, 1000.0)
    assert settings["travel_limits_um"] == (-100.0, 1000.0)
    assert settings["travel_limits_pulses"] == (-160, 1600)
    assert settings["alarm_code"] == 0


async def test_verify_safe_refuses_a_fault_bit_with_no_alarm_code() -> None:
    # 0x0003: fault and enabled at rest, alarm code 0 (seen from a drive); `rig check` and `rig run` share this check
    async with session([*LIMITS, read(0x2203, 0), read(0x1003, 0x0003)]) as rig:
        with pytest.raises(DeviceAlarm, match="fault bit set with no alarm code"):
            await rig.press.verify_safe(-100.0, 1000.0)


async def test_verify_safe_refuses_a_disabled_drive() -> None:
    async with session([*LIMITS, read(0x2203, 0), read(0x1003, 0x0000)]) as rig:
        with pytest.raises(DeviceError, match="not enabled"):
            await rig.press.verify_safe(-100.0, 1000.0)


async def test_verify_safe_refuses_an_active_alarm() -> None:
    async with session([*LIMITS, read(0x2203, 0x0180)]) as rig:
        with pytest.raises(DeviceAlarm, match="position error") as caught:
            await rig.press.verify_safe(-100.0, 1000.0)
    assert caught.value.code == 0x0180


async def test_identify_checks_the_drive_answers() -> None:
    async with session([read(0x1003, 0x0002)]) as rig:
        identity = await rig.press.identify()
    assert identity.vendor == "Leadshine" and identity.device == "press"


@pytest.mark.parametrize(
    "options",
    [
        {"um_per_pulse": 0.0},
        {"um_per_pulse": float("inf")},
        {"accel_register": 0x6205, "decel_register": 0x6205},
        {"accel_register": 0x6203},
    ],
)
def test_bad_configuration_is_refused(options: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        LeadshinePR(bus=ModbusBus(port="socket://127.0.0.1:1"), **options)  # type: ignore[arg-type]
