"""Mark-10 force gauge: byte-exact conversations over a real TCP peer reached as socket://."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest

from drivers.errors import DeviceDisconnected, DeviceProtocolError, DeviceTimeout, InvalidReadingError
from drivers.interfaces import ForceSensor, ForceStatus
from drivers.mark10 import MARK10_UNITS_TO_N, Mark10, parse_mark10_line
from tests.drivers.timed_peer import timed_peer
from tests.support.expected_protocol import expected_protocol

LBF_N = 4.4482216152605


class ListClock:
    """Returns the given times in order, so timestamps can be checked exactly."""

    def __init__(self, *times: float) -> None:
        self._times: Iterator[float] = iter(times)

    def now(self) -> float:
        """Next scripted time."""
        return next(self._times)


def gauge_at(url: str, **kwargs: object) -> Mark10:
    """A Mark10 on `url` with test-friendly defaults."""
    options: dict[str, object] = {"name": "gauge", "url": url, "timeout_s": 1.0}
    options.update(kwargs)
    return Mark10(**options)  # type: ignore[arg-type]


async def test_reads_a_normal_reply_with_seq_and_injected_clock_time() -> None:
    conversation = [(b"?\r\n", b"12.3 N\r\n"), (b"?\r\n", b"-0.45 N\r\n")]
    async with expected_protocol(conversation) as peer:
        gauge = gauge_at(peer.serial_url, clock=ListClock(100.0, 100.5))
        await gauge.connect()
        try:
            first = await gauge.read()
            second = await gauge.read()
        finally:
            await gauge.close()
    assert (first.seq, first.t_s, first.status, first.force_n(), first.raw) == (
        1,
        100.0,
        ForceStatus.OK,
        12.3,
        "12.3 N",
    )
    assert (second.seq, second.t_s, second.force_n()) == (2, 100.5, -0.45)


async def test_streaming_gauge_skips_the_partial_first_line_in_the_same_chunk() -> None:
    # The tail "2.3 N" of "12.3 N" arrives first; it must not be read as 2.3 N.
    async with expected_protocol([(b"?\r\n", b"2.3 N\r\n12.4 N\r\n")]) as peer:
        gauge = gauge_at(peer.serial_url, streaming=True)
        await gauge.connect()
        try:
            reading = await gauge.read()
        finally:
            await gauge.close()
    assert reading.force_n() == 12.4


async def test_streaming_gauge_skips_a_partial_first_line_that_arrives_alone() -> None:
    # The next full line comes 100 ms later: a driver that takes the first line would return 2.3.
    script = [(b"?\r\n", [(0.0, b"2.3 N\r\n"), (0.1, b"12.4 N\r\n")])]
    async with timed_peer(script) as peer:
        gauge = gauge_at(peer.serial_url, streaming=True)
        await gauge.connect()
        try:
            reading = await gauge.read()
        finally:
            await gauge.close()
    assert reading.force_n() == 12.4


async def test_when_several_complete_lines_arrive_the_newest_wins() -> None:
    async with expected_protocol([(b"?\r\n", b"1.0 N\r\n1.2 N\r\n1.5 N\r\n")]) as peer:
        gauge = gauge_at(peer.serial_url)
        await gauge.connect()
        try:
            reading = await gauge.read()
        finally:
            await gauge.close()
    assert reading.force_n() == 1.5


async def test_a_line_cut_by_the_stale_input_flush_is_skipped() -> None:
    # After the first reply, "2." of an unsolicited line is buffered. The flush before the next query drops
    # it; its tail "5 N" then arrives first and must be skipped even on a polled gauge.
    script = [
        (b"?\r\n", [(0.0, b"1.0 N\r\n2.")]),
        (b"?\r\n", [(0.0, b"5 N\r\n"), (0.1, b"3.5 N\r\n")]),
    ]
    async with timed_peer(script) as peer:
        gauge = gauge_at(peer.serial_url)
        await gauge.connect()
        try:
            first = await gauge.read()
            second = await gauge.read()
        finally:
            await gauge.close()
    assert (first.force_n(), second.force_n()) == (1.0, 3.5)


async def test_stale_buffered_lines_are_flushed_before_asking() -> None:
    # A late extra line (9.9 N) lands in the buffer between reads; the next read must answer 3.0, not 9.9.
    import asyncio

    script = [
        (b"?\r\n", [(0.0, b"1.0 N\r\n"), (0.05, b"9.9 N\r\n")]),
        (b"?\r\n", [(0.0, b"3.0 N\r\n")]),
    ]
    async with timed_peer(script) as peer:
        gauge = gauge_at(peer.serial_url)
        await gauge.connect()
        try:
            first = await gauge.read()
            await asyncio.sleep(0.2)
            second = await gauge.read()
        finally:
            await gauge.close()
    assert (first.force_n(), second.force_n()) == (1.0, 3.0)


async def test_lbf_reply_is_converted_to_newtons() -> None:
    async with expected_protocol([(b"?\r\n", b"2.5 lbF\r\n")]) as peer:
        gauge = gauge_at(peer.serial_url)
        await gauge.connect()
        try:
            reading = await gauge.read()
        finally:
            await gauge.close()
    assert reading.force_n() == pytest.approx(2.5 * LBF_N, rel=1e-12)
    assert reading.raw == "2.5 lbF"


@pytest.mark.parametrize(
    ("line", "expected_n"),
    [
        (b"1 N\r\n", 1.0),
        (b"+1.5 kN\r\n", 1500.0),
        (b"250 mN\r\n", 0.25),
        (b"-3.25 lbf\r\n", -3.25 * LBF_N),
        (b"2 kgF\r\n", 2 * 9.80665),
        (b"500 gF\r\n", 0.5 * 9.80665),
        (b"16 ozF\r\n", 16 * 0.27801385095378125),
        (b"12.3N\r\n", 12.3),
        (b" .5 N \r\n", 0.5),
    ],
)
def test_parse_converts_every_unit_to_newtons(line: bytes, expected_n: float) -> None:
    parsed = parse_mark10_line(line)
    assert parsed.value_n == pytest.approx(expected_n, rel=1e-12)


def test_pound_ounce_and_kilogram_factors_are_consistent() -> None:
    assert MARK10_UNITS_TO_N["lbF"] == pytest.approx(16 * MARK10_UNITS_TO_N["ozF"], rel=1e-12)
    assert MARK10_UNITS_TO_N["lbF"] == pytest.approx(0.45359237 * MARK10_UNITS_TO_N["kgF"], rel=1e-12)


@pytest.mark.parametrize(
    "reply",
    [
        b"nan N\r\n",
        b"NaN\r\n",
        b"inf N\r\n",
        b"-inf lbF\r\n",
        b"1e999 N\r\n",
        b"\xff\xfe12.0 N\r\n",
        b"ERR\r\n",
        b"12.3 furlongs\r\n",
        b"12.3 MN\r\n",
        b"12.3\r\n",
        b"\r\n",
        b"12.3 N 4\r\n",
    ],
)
async def test_garbage_nan_inf_or_unparsable_reply_is_an_invalid_reading(reply: bytes) -> None:
    async with expected_protocol([(b"?\r\n", reply)]) as peer:
        gauge = gauge_at(peer.serial_url)
        await gauge.connect()
        try:
            reading = await gauge.read()
        finally:
            await gauge.close()
    assert reading.status & ForceStatus.INVALID
    assert reading.value_n is None
    assert not reading.valid
    with pytest.raises(InvalidReadingError):
        reading.force_n()


async def test_a_unit_other_than_the_expected_one_is_invalid() -> None:
    async with expected_protocol([(b"?\r\n", b"2.5 lbF\r\n"), (b"?\r\n", b"2.5 N\r\n")]) as peer:
        gauge = gauge_at(peer.serial_url, expected_unit="N")
        await gauge.connect()
        try:
            wrong_unit = await gauge.read()
            right_unit = await gauge.read()
        finally:
            await gauge.close()
    assert wrong_unit.status & ForceStatus.INVALID and wrong_unit.value_n is None
    assert right_unit.force_n() == 2.5


def test_a_reply_without_unit_takes_the_expected_unit() -> None:
    assert parse_mark10_line(b"2\r\n", expected_unit="lbF").value_n == pytest.approx(2 * LBF_N)
    assert parse_mark10_line(b"2\r\n").value_n is None


async def test_silence_raises_device_timeout_within_the_timeout() -> None:
    # The peer stays connected (check_extra_s) past the gauge's timeout: silence, not a closed port.
    async with expected_protocol([(b"?\r\n", None)], check_extra_s=2.0) as peer:
        gauge = gauge_at(peer.serial_url, timeout_s=0.3)
        await gauge.connect()
        try:
            started = time.monotonic()
            with pytest.raises(DeviceTimeout) as caught:
                await gauge.read()
            elapsed_s = time.monotonic() - started
        finally:
            await gauge.close()
    assert 0.25 <= elapsed_s < 0.8
    assert (caught.value.device, caught.value.command) == ("gauge", "?")


async def test_a_half_line_then_silence_times_out_and_reports_what_came() -> None:
    async with expected_protocol([(b"?\r\n", b"12.")], check_extra_s=2.0) as peer:
        gauge = gauge_at(peer.serial_url, timeout_s=0.3)
        await gauge.connect()
        try:
            with pytest.raises(DeviceTimeout) as caught:
                await gauge.read()
        finally:
            await gauge.close()
    assert caught.value.reply == b"12."


@pytest.mark.parametrize(("reply", "overload"), [(b"50.1 N\r\n", True), (b"-60 N\r\n", True), (b"50 N\r\n", False)])
async def test_force_beyond_capacity_is_overload(reply: bytes, overload: bool) -> None:
    async with expected_protocol([(b"?\r\n", reply)]) as peer:
        gauge = gauge_at(peer.serial_url, capacity_n=50.0)
        await gauge.connect()
        try:
            reading = await gauge.read()
        finally:
            await gauge.close()
    assert bool(reading.status & ForceStatus.OVERLOAD) is overload
    assert reading.valid is not overload
    if overload:
        assert reading.value_n is not None and abs(reading.value_n) > 50.0
        with pytest.raises(InvalidReadingError):
            reading.force_n()


async def test_overload_text_is_overload_without_a_number() -> None:
    async with expected_protocol([(b"?\r\n", b"OVER\r\n")]) as peer:
        gauge = gauge_at(peer.serial_url)
        await gauge.connect()
        try:
            reading = await gauge.read()
        finally:
            await gauge.close()
    assert reading.status & ForceStatus.OVERLOAD and reading.status & ForceStatus.INVALID
    assert reading.value_n is None


async def test_invert_sign_flips_the_reported_force() -> None:
    async with expected_protocol([(b"?\r\n", b"7.5 N\r\n")]) as peer:
        gauge = gauge_at(peer.serial_url, invert_sign=True)
        await gauge.connect()
        try:
            reading = await gauge.read()
        finally:
            await gauge.close()
    assert reading.force_n() == -7.5


async def test_zero_and_tare_both_send_z() -> None:
    async with expected_protocol([(b"Z\r\n", None), (b"Z\r\n", None)]) as peer:
        gauge = gauge_at(peer.serial_url)
        await gauge.connect()
        try:
            await gauge.zero()
            await gauge.tare()
        finally:
            await gauge.close()


async def test_set_unit_newtons_sends_n_and_checks_the_unit() -> None:
    async with expected_protocol([(b"N\r\n", None), (b"?\r\n", b"0.00 N\r\n")]) as peer:
        gauge = gauge_at(peer.serial_url, expected_unit="lbF")
        await gauge.connect()
        try:
            await gauge.set_unit_newtons()
        finally:
            await gauge.close()
    assert gauge.expected_unit == "N"


async def test_set_unit_newtons_fails_when_the_gauge_stays_in_pounds() -> None:
    async with expected_protocol([(b"N\r\n", None), (b"?\r\n", b"0.00 lbF\r\n")]) as peer:
        gauge = gauge_at(peer.serial_url)
        await gauge.connect()
        try:
            with pytest.raises(DeviceProtocolError) as caught:
                await gauge.set_unit_newtons()
        finally:
            await gauge.close()
    assert caught.value.command == "N"
    assert caught.value.reply == b"0.00 lbF\r\n"


async def test_identify_returns_the_configured_identity_without_io() -> None:
    gauge = Mark10(name="gauge", url="socket://127.0.0.1:9", model="M5-100", serial_number="3456789")
    identity = await gauge.identify()
    assert (identity.device, identity.vendor, identity.model, identity.serial) == (
        "gauge",
        "Mark-10",
        "M5-100",
        "3456789",
    )
    assert isinstance(gauge, ForceSensor)


async def test_read_before_connect_is_refused() -> None:
    gauge = gauge_at("socket://127.0.0.1:9")
    with pytest.raises(DeviceDisconnected):
        await gauge.read()


async def test_read_reconnects_after_the_port_disappears_and_refinds_it_by_usb_serial() -> None:
    paths: dict[str, str] = {}
    asked: list[str] = []

    def finder(serial_number: str) -> str | None:
        asked.append(serial_number)
        return paths.get(serial_number)

    gauge = Mark10(name="gauge", usb_serial_number="MK10-42", port_finder=finder, timeout_s=1.0)
    try:
        async with expected_protocol([(b"?\r\n", b"1.0 N\r\n")]) as first_port:
            paths["MK10-42"] = first_port.serial_url
            await gauge.connect()
            before = await gauge.read()
        # The first port is gone (peer closed); the gauge comes back under another path.
        async with expected_protocol([(b"?\r\n", b"2.0 N\r\n")]) as second_port:
            paths["MK10-42"] = second_port.serial_url
            after = await gauge.read()
            await gauge.close()
    finally:
        await gauge.close()
    assert (before.force_n(), after.force_n()) == (1.0, 2.0)
    assert asked == ["MK10-42", "MK10-42"]
    assert (before.seq, after.seq) == (1, 2)


def test_constructor_rejects_unknown_expected_unit_and_bad_capacity() -> None:
    with pytest.raises(ValueError, match="expected_unit"):
        Mark10(name="gauge", url="socket://127.0.0.1:9", expected_unit="stone")
    with pytest.raises(ValueError, match="capacity_n"):
        Mark10(name="gauge", url="socket://127.0.0.1:9", capacity_n=math.nan)
