"""ModbusTransmitter: byte-exact conversations with the load-cell transmitter of devices.md §1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest

from drivers.errors import DeviceProtocolError, InvalidReadingError, UnsafeSetting
from drivers.interfaces import ForceSensor, ForceStatus
from drivers.modbus_bus import ModbusBus
from drivers.modbus_transmitter import ModbusTransmitter
from tests.drivers.rtu_frames import StepClock, read_reply, read_request, write_multiple
from tests.support.expected_protocol import ScriptedPeer, expected_protocol

H = bytes.fromhex

WEIGHT_REQUEST = H("01 03 00 50 00 02 C4 1A")
WEIGHT_132_REPLY = H("01 03 04 00 00 00 84 FA 50")
STATUS_REQUEST = H("01 03 00 08 00 01 05 C8")
STATUS_2DP_REPLY = H("01 03 02 08 02 3E 45")
UNLOCK = (H("01 10 00 05 00 01 02 5A A5 5C DE"), write_multiple(1, 0x0005, 0x5AA5)[1])

Script = Sequence[tuple[bytes, bytes | None]]


def weight(raw: int) -> tuple[bytes, bytes]:
    """The gross-weight exchange answering `raw` (int32, high word first)."""
    value = raw & 0xFFFFFFFF
    return WEIGHT_REQUEST, read_reply(1, value >> 16, value & 0xFFFF)


def status(word: int) -> tuple[bytes, bytes]:
    """The status-word exchange answering `word`."""
    return STATUS_REQUEST, read_reply(1, word)


def read(address: int, *values: int) -> tuple[bytes, bytes]:
    """An FC03 exchange on slave 1."""
    return read_request(1, address, len(values)), read_reply(1, *values)


class Rig:
    """A transmitter connected to a scripted peer."""

    def __init__(self, peer: ScriptedPeer, tx: ModbusTransmitter) -> None:
        self.peer = peer
        self.tx = tx


@contextlib.asynccontextmanager
async def session(script: Script, **options: object) -> AsyncIterator[Rig]:
    """A transmitter on slave 1 of a fresh bus whose peer must see exactly `script`."""
    async with expected_protocol(script) as peer:
        bus = ModbusBus(port=peer.serial_url, baudrate=9600, timeout_s=0.3, retries=0, name="bus0")
        tx = ModbusTransmitter(bus=bus, clock=StepClock(), **options)  # type: ignore[arg-type]
        await tx.connect()
        try:
            yield Rig(peer, tx)
        finally:
            await tx.close()
        assert not bus.is_open


def test_is_a_force_sensor() -> None:
    bus = ModbusBus(port="socket://127.0.0.1:1")
    assert isinstance(ModbusTransmitter(bus=bus), ForceSensor)


async def test_read_decodes_devices_md_vectors_to_1_32_newtons() -> None:
    script = [(WEIGHT_REQUEST, WEIGHT_132_REPLY), (STATUS_REQUEST, STATUS_2DP_REPLY)]
    async with session(script) as rig:
        reading = await rig.tx.read()
    assert reading.force_n() == pytest.approx(1.32)
    assert reading.status == ForceStatus.OK
    assert reading.seq == 1
    assert reading.t_s == 100.0
    assert "132" in reading.raw and "0x0802" in reading.raw


@pytest.mark.parametrize(
    ("unit", "scale_to_n", "expected_n"),
    [
        ("kg", None, 1.32 * 9.80665),
        ("g", None, 1.32 * 9.80665e-3),
        ("N", 2.5, 3.3),
    ],
)
async def test_unit_and_scale_convert_to_newtons(unit: str, scale_to_n: float | None, expected_n: float) -> None:
    script = [(WEIGHT_REQUEST, WEIGHT_132_REPLY), (STATUS_REQUEST, STATUS_2DP_REPLY)]
    async with session(script, unit=unit, scale_to_n=scale_to_n) as rig:
        reading = await rig.tx.read()
    assert reading.force_n() == pytest.approx(expected_n)


async def test_negative_int32_and_decimal_places_from_status() -> None:
    async with session([weight(-132), status(0x0003), weight(-70000), status(0x0000)]) as rig:
        first = await rig.tx.read()
        second = await rig.tx.read()
    assert first.force_n() == pytest.approx(-0.132)
    assert second.force_n() == pytest.approx(-70000.0)


async def test_seq_increases_and_time_comes_from_the_injected_clock() -> None:
    async with session([weight(1), status(0), weight(2), status(0), weight(3), status(0)]) as rig:
        readings = [await rig.tx.read() for _ in range(3)]
    assert [r.seq for r in readings] == [1, 2, 3]
    assert [r.t_s for r in readings] == [100.0, 101.0, 102.0]


@pytest.mark.parametrize(
    ("word", "flag"),
    [
        (0x0202, ForceStatus.OVERLOAD),  # b9
        (0x0042, ForceStatus.OVERFLOW),  # b6
    ],
)
async def test_overload_and_overflow_bits_give_no_number(word: int, flag: ForceStatus) -> None:
    async with session([weight(132), status(word)]) as rig:
        reading = await rig.tx.read()
    assert flag in reading.status
    assert not reading.valid
    assert reading.value_n is None
    with pytest.raises(InvalidReadingError):
        reading.force_n()


async def test_unstable_bit_is_flagged_but_still_a_force() -> None:
    async with session([weight(132), status(0x0022)]) as rig:
        reading = await rig.tx.read()
    assert ForceStatus.UNSTABLE in reading.status
    assert reading.force_n() == pytest.approx(1.32)


@pytest.mark.parametrize(("raw", "valid"), [(110, True), (-110, True), (111, False), (-111, False)])
async def test_beyond_110_percent_of_capacity_is_overflow(raw: int, valid: bool) -> None:
    async with session([weight(raw), status(0x0002)], capacity_n=1.0) as rig:
        reading = await rig.tx.read()
    assert reading.valid is valid
    assert (ForceStatus.OVERFLOW in reading.status) is not valid
    assert (reading.value_n is None) is not valid


@pytest.mark.parametrize("raw", [2**31 - 1, -(2**31)])
async def test_pinned_int32_is_overflow_even_without_capacity(raw: int) -> None:
    async with session([weight(raw), status(0)]) as rig:
        reading = await rig.tx.read()
    assert ForceStatus.OVERFLOW in reading.status and reading.value_n is None


async def test_bad_crc_raises_and_returns_no_reading() -> None:
    bad = WEIGHT_132_REPLY[:-1] + b"\x00"
    async with session([(WEIGHT_REQUEST, bad), weight(5), status(0)]) as rig:
        with pytest.raises(DeviceProtocolError, match=r"load cell.*0x0050"):
            await rig.tx.read()
        reading = await rig.tx.read()
    assert reading.seq == 1 and reading.force_n() == 5.0


async def test_tare_unlocks_then_writes_7fffffff() -> None:
    tare = write_multiple(1, 0x0054, 0x7FFF, 0xFFFF)
    assert tare[0].startswith(H("01 10 00 54 00 02 04 7F FF FF FF"))
    async with session([UNLOCK, tare]) as rig:
        await rig.tx.tare()
    assert rig.peer.received == [UNLOCK[0], tare[0]]


async def test_zero_unlocks_then_writes_00ff_to_005e() -> None:
    zero = write_multiple(1, 0x005E, 0x00FF)
    async with session([UNLOCK, zero]) as rig:
        await rig.tx.zero()
    assert rig.peer.received == [UNLOCK[0], zero[0]]


def safety_script(
    zero_tracking: tuple[int, int] = (0, 0), creep: tuple[int, int] = (0, 0)
) -> list[tuple[bytes, bytes]]:
    return [
        UNLOCK,
        write_multiple(1, 0x0060, 0, 0),
        write_multiple(1, 0x0066, 0, 0),
        read(0x0060, *zero_tracking),
        read(0x0066, *creep),
    ]


async def test_verify_safe_turns_tracking_off_reads_it_back_and_reports_settings() -> None:
    script = [*safety_script(), read(0x0020, 6), read(0x0022, 1, 30), read(0x0006, 0x0103)]
    async with session(script) as rig:
        settings = await rig.tx.verify_safe()
    assert settings == {
        "zero_tracking_range": 0,
        "zero_tracking_time": 0,
        "creep_tracking_range": 0,
        "creep_tracking_time": 0,
        "adc_speed_code": 6,
        "filter_type": 1,
        "filter_strength": 30,
        "firmware": "0x0103",
    }


@pytest.mark.parametrize(
    ("zero_tracking", "creep", "register", "value"),
    [
        ((0, 5), (0, 0), "0x0061", "5"),
        ((0, 0), (2, 0), "0x0066", "2"),
    ],
)
async def test_verify_safe_refuses_tracking_that_stays_on(
    zero_tracking: tuple[int, int], creep: tuple[int, int], register: str, value: str
) -> None:
    async with session(safety_script(zero_tracking, creep)) as rig:
        with pytest.raises(UnsafeSetting) as caught:
            await rig.tx.verify_safe()
    message = str(caught.value)
    assert register in message and f"is {value}" in message and "load cell" in message


async def test_identify_reads_firmware() -> None:
    async with session([read(0x0006, 0x0210)]) as rig:
        identity = await rig.tx.identify()
    assert identity.firmware == "0x0210" and identity.device == "load cell"


@pytest.mark.parametrize(
    "options", [{"unit": "lb"}, {"scale_to_n": 0.0}, {"scale_to_n": float("nan")}, {"capacity_n": -1.0}]
)
def test_bad_configuration_is_refused(options: dict[str, object]) -> None:
    bus = ModbusBus(port="socket://127.0.0.1:1")
    with pytest.raises(ValueError):
        ModbusTransmitter(bus=bus, **options)  # type: ignore[arg-type]
