"""Keithley 2450: byte-exact SCPI over pyvisa-py (TCPIP0::127.0.0.1::PORT::SOCKET) to a real TCP peer."""

from __future__ import annotations

import asyncio
import math
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from drivers.errors import (
    DeviceDisconnected,
    DeviceExceptionReply,
    DeviceProtocolError,
    DeviceTimeout,
    InvalidReadingError,
    UnsafeSetting,
)
from drivers.interfaces import GalvanostaticConfig, Potentiostat
from drivers.keithley2450 import READ_QUERY, Keithley2450, ScpiError, parse_system_error
from tests.drivers.timed_peer import timed_peer
from tests.support.expected_protocol import expected_protocol

Step = tuple[bytes, bytes | None]

IDN = b"KEITHLEY INSTRUMENTS,MODEL 2450,04096331,1.7.3c\n"
NO_ERROR: Step = (b":SYST:ERR?\n", b'0,"No error"\n')
READ = (READ_QUERY + "\n").encode()
TRIP = b":SOUR:CURR:VLIM:TRIP?\n"


class ListClock:
    """Returns the given times in order, so timestamps can be checked exactly."""

    def __init__(self, *times: float) -> None:
        self._times: Iterator[float] = iter(times)

    def now(self) -> float:
        """Next scripted time."""
        return next(self._times)


def checked(command: str) -> list[Step]:
    """A configuration write followed by the error-queue check that finds it empty."""
    return [(command.encode() + b"\n", None), NO_ERROR]


def verify_safe_steps(*, smod: bytes = b"HIMP", vlim: bytes = b"2.000000E+00", errors: Step = NO_ERROR) -> list[Step]:
    """The conversation of `verify_safe(2.0)`."""
    return [
        (b"*CLS\n", None),
        (b":OUTP:CURR:SMOD HIMP\n", None),
        (b":SOUR:CURR:VLIM 2\n", None),
        (b":OUTP:CURR:SMOD?\n", smod + b"\n"),
        (b":SOUR:CURR:VLIM?\n", vlim + b"\n"),
        (b":OUTP?\n", b"0\n"),
        (b":SOUR:FUNC?\n", b"CURR\n"),
        errors,
    ]


def configure_steps() -> list[Step]:
    """The conversation of configuring -0.5 mA, 2 V limit, auto ranges, 1 PLC, 2-wire, output off."""
    return [
        (b":OUTP?\n", b"0\n"),
        *checked(":SOUR:FUNC CURR"),
        *checked(":SOUR:CURR:RANG:AUTO 1"),
        *checked(":SOUR:CURR:VLIM 2"),
        *checked(":SOUR:CURR -0.0005"),
        *checked(':SENS:FUNC "VOLT"'),
        *checked(":SENS:VOLT:RANG:AUTO 1"),
        *checked(":SENS:VOLT:NPLC 1"),
        *checked(":SENS:VOLT:RSEN OFF"),
    ]


PLATING = GalvanostaticConfig(current_a=-0.5e-3, voltage_limit_v=2.0)


def smu_at(resource: str, **kwargs: object) -> Keithley2450:
    """A Keithley2450 on `resource` with a short timeout."""
    options: dict[str, object] = {"name": "smu", "resource": resource, "timeout_s": 1.0}
    options.update(kwargs)
    return Keithley2450(**options)  # type: ignore[arg-type]


def _visa_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"visa-{name}")]


async def test_identify_parses_idn_over_pyvisa_py_and_close_stops_the_worker() -> None:
    async with expected_protocol([(b"*IDN?\n", IDN)]) as peer:
        smu = smu_at(peer.visa_resource, name="smu-idn")
        await smu.connect()
        try:
            identity = await smu.identify()
            assert _visa_threads("smu-idn"), "the VISA worker thread should exist while connected"
        finally:
            await smu.close()
    assert peer.received == [b"*IDN?\n"]
    assert (identity.device, identity.vendor, identity.model, identity.serial, identity.firmware) == (
        "smu-idn",
        "KEITHLEY INSTRUMENTS",
        "MODEL 2450",
        "04096331",
        "1.7.3c",
    )
    assert _visa_threads("smu-idn") == []
    assert isinstance(smu, Potentiostat)


@pytest.mark.parametrize(
    "reply", [b"KEITHLEY INSTRUMENTS,MODEL 2400,1234,C30\n", b"KEITHLEY INSTRUMENTS,MODEL 2450\n", b"\n"]
)
async def test_identify_rejects_another_model_or_a_malformed_idn(reply: bytes) -> None:
    async with expected_protocol([(b"*IDN?\n", reply)]) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            with pytest.raises(DeviceProtocolError) as caught:
                await smu.identify()
        finally:
            await smu.close()
    assert caught.value.command == "*IDN?"


async def test_galvanostatic_configure_sends_the_exact_sequence_with_error_checks() -> None:
    async with expected_protocol(configure_steps()) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            await smu.configure_galvanostatic(PLATING)
        finally:
            await smu.close()


async def test_configure_with_fixed_ranges_and_four_wire() -> None:
    config = GalvanostaticConfig(
        current_a=1e-3,
        voltage_limit_v=1.5,
        current_range_a=1e-3,
        voltage_range_v=2.0,
        nplc=0.1,
        four_wire=True,
    )
    conversation = [
        (b":OUTP?\n", b"0\n"),
        *checked(":SOUR:FUNC CURR"),
        *checked(":SOUR:CURR:RANG 0.001"),
        *checked(":SOUR:CURR:VLIM 1.5"),
        *checked(":SOUR:CURR 0.001"),
        *checked(':SENS:FUNC "VOLT"'),
        *checked(":SENS:VOLT:RANG 2"),
        *checked(":SENS:VOLT:NPLC 0.1"),
        *checked(":SENS:VOLT:RSEN ON"),
    ]
    async with expected_protocol(conversation) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            await smu.configure_galvanostatic(config)
        finally:
            await smu.close()


async def test_configure_refuses_to_change_sense_mode_with_the_output_on_and_writes_nothing() -> None:
    conversation = [(b":OUTP?\n", b"1\n"), (b":SENS:VOLT:RSEN?\n", b"0\n")]
    four_wire = GalvanostaticConfig(current_a=1e-3, voltage_limit_v=2.0, four_wire=True)
    async with expected_protocol(conversation) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            with pytest.raises(UnsafeSetting) as caught:
                await smu.configure_galvanostatic(four_wire)
        finally:
            await smu.close()
    assert caught.value.command == ":SENS:VOLT:RSEN ON"


async def test_configure_with_the_output_on_skips_sense_mode_and_function_writes() -> None:
    conversation = [
        (b":OUTP?\n", b"1\n"),
        (b":SENS:VOLT:RSEN?\n", b"0\n"),
        (b":SOUR:FUNC?\n", b"CURR\n"),
        *configure_steps()[3:-2],
    ]
    async with expected_protocol(conversation) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            await smu.configure_galvanostatic(PLATING)
        finally:
            await smu.close()


@pytest.mark.parametrize("voltage", [b"9.900000E+37", b"-9.900000E+37", b"9.910000E+37", b"NAN", b"inf"])
async def test_overrange_voltage_is_a_reading_without_a_number(voltage: bytes) -> None:
    reply = b"-1.000000E-03," + voltage + b",1.250000E+00\n"
    async with expected_protocol([(READ, reply), (TRIP, b"0\n")]) as peer:
        smu = smu_at(peer.visa_resource, clock=ListClock(42.0))
        await smu.connect()
        try:
            reading = await smu.read()
        finally:
            await smu.close()
    assert reading.overrange and reading.value_v is None and not reading.valid
    with pytest.raises(InvalidReadingError):
        reading.voltage_v()
    assert (reading.current_a, reading.instrument_time_s, reading.t_s) == (-1e-3, 1.25, 42.0)
    assert reading.in_compliance is False


async def test_reading_in_compliance_sets_the_flag_and_keeps_the_voltage() -> None:
    conversation = [
        (READ, b"5.000000E-04,1.999800E+00,3.500000E+00\n"),
        (TRIP, b"1\n"),
        (READ, b"5.000000E-04,1.234500E+00,3.600000E+00\n"),
        (TRIP, b"0\n"),
    ]
    async with expected_protocol(conversation) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            limited = await smu.read()
            free = await smu.read()
        finally:
            await smu.close()
    assert limited.in_compliance is True and limited.voltage_v() == 1.9998 and limited.current_a == 5e-4
    assert free.in_compliance is False and free.voltage_v() == 1.2345


@pytest.mark.parametrize("reply", [b"5.0E-04,1.2\n", b"5.0E-04,volts,1.0\n", b"NAN,1.0,1.0\n"])
async def test_a_malformed_reading_is_a_protocol_error_naming_the_query(reply: bytes) -> None:
    async with expected_protocol([(READ, reply), (TRIP, b"0\n")]) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            with pytest.raises(DeviceProtocolError) as caught:
                await smu.read()
        finally:
            await smu.close()
    assert caught.value.command == READ_QUERY


async def test_verify_safe_refuses_normal_output_off_mode_and_output_on_stays_refused() -> None:
    async with expected_protocol(verify_safe_steps(smod=b"NORM")) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            with pytest.raises(UnsafeSetting) as caught:
                await smu.verify_safe(2.0)
            with pytest.raises(UnsafeSetting) as refused:
                await smu.output(True)
        finally:
            await smu.close()
    assert caught.value.command == ":OUTP:CURR:SMOD"
    assert caught.value.reply == "NORM"
    assert refused.value.command == ":OUTP ON"


async def test_verify_safe_refuses_a_non_empty_error_queue() -> None:
    conversation = [*verify_safe_steps(errors=(b":SYST:ERR?\n", b'-222,"Data out of range"\n')), NO_ERROR]
    async with expected_protocol(conversation) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            with pytest.raises(UnsafeSetting) as caught:
                await smu.verify_safe(2.0)
        finally:
            await smu.close()
    assert caught.value.command == ":SYST:ERR?"
    assert "-222" in str(caught.value.reply)


async def test_verify_safe_refuses_a_compliance_that_reads_back_wrong() -> None:
    async with expected_protocol(verify_safe_steps(vlim=b"2.000000E+01")) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            with pytest.raises(UnsafeSetting) as caught:
                await smu.verify_safe(2.0)
        finally:
            await smu.close()
    assert caught.value.command == ":SOUR:CURR:VLIM"


async def test_output_on_is_refused_until_configured_even_when_safe() -> None:
    async with expected_protocol(verify_safe_steps()) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            safety = await smu.verify_safe(2.0)
            with pytest.raises(UnsafeSetting, match="configure_galvanostatic"):
                await smu.output(True)
        finally:
            await smu.close()
    assert (safety.output_off_mode, safety.voltage_limit_v, safety.output_on, safety.source_function) == (
        "HIMP",
        2.0,
        False,
        "CURR",
    )


async def test_a_whole_galvanostatic_step_exact_bytes() -> None:
    conversation = [
        *verify_safe_steps(),
        *configure_steps(),
        *checked(":OUTP ON"),
        (READ, b"-5.000000E-04,-1.200000E-02,1.000000E-01\n"),
        (TRIP, b"0\n"),
        *checked(":SOUR:CURR 0.001"),
        *checked(":OUTP OFF"),
    ]
    async with expected_protocol(conversation) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            await smu.verify_safe(2.0)
            await smu.configure_galvanostatic(PLATING)
            await smu.output(True)
            reading = await smu.read()
            await smu.set_current_a(1e-3)
            await smu.output(False)
        finally:
            await smu.close()
    assert reading.voltage_v() == -0.012 and reading.current_a == -5e-4


async def test_an_error_queue_entry_raises_exception_reply_naming_the_command() -> None:
    conversation = [
        (b":SOUR:CURR 2\n", None),
        (b":SYST:ERR?\n", b'-222,"Data out of range"\n'),
        NO_ERROR,
    ]
    async with expected_protocol(conversation) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            with pytest.raises(DeviceExceptionReply) as caught:
                await smu.set_current_a(2.0)
        finally:
            await smu.close()
    assert (caught.value.code, caught.value.command, caught.value.device) == (-222, ":SOUR:CURR 2", "smu")
    assert "Data out of range" in str(caught.value)


async def test_configure_stops_at_the_first_rejected_command() -> None:
    conversation = [
        (b":OUTP?\n", b"0\n"),
        (b":SOUR:FUNC CURR\n", None),
        (b":SYST:ERR?\n", b'-113,"Undefined header"\n'),
        (b":SYST:ERR?\n", b'-230,"Data corrupt or stale"\n'),
        NO_ERROR,
    ]
    async with expected_protocol(conversation) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            with pytest.raises(DeviceExceptionReply) as caught:
                await smu.configure_galvanostatic(PLATING)
        finally:
            await smu.close()
    assert (caught.value.code, caught.value.command) == (-113, ":SOUR:FUNC CURR")
    assert "-230" in str(caught.value.reply)


async def test_safety_settings_reads_back_and_collects_the_error_queue() -> None:
    conversation = [
        (b":OUTP:CURR:SMOD?\n", b"HIMP\n"),
        (b":SOUR:CURR:VLIM?\n", b"1.500000E+00\n"),
        (b":OUTP?\n", b"1\n"),
        (b":SOUR:FUNC?\n", b"CURR\n"),
        (b":SYST:ERR?\n", b'-113,"Undefined header"\n'),
        (b":SYST:ERR?\n", b'-222,"Data out of range"\n'),
        NO_ERROR,
    ]
    async with expected_protocol(conversation) as peer:
        smu = smu_at(peer.visa_resource)
        await smu.connect()
        try:
            safety = await smu.safety_settings()
        finally:
            await smu.close()
    assert safety.output_on is True and safety.voltage_limit_v == 1.5
    assert safety.errors == ('-113,"Undefined header"', '-222,"Data out of range"')


async def test_silence_raises_device_timeout_within_the_timeout() -> None:
    async with expected_protocol([(b"*IDN?\n", None)], check_extra_s=2.0) as peer:
        smu = smu_at(peer.visa_resource, timeout_s=0.3)
        await smu.connect()
        try:
            started = time.monotonic()
            with pytest.raises(DeviceTimeout) as caught:
                await smu.identify()
            elapsed_s = time.monotonic() - started
        finally:
            await smu.close()
    assert 0.25 <= elapsed_s < 0.8
    assert (caught.value.device, caught.value.command) == ("smu", "*IDN?")


async def test_a_late_reply_after_a_timeout_is_cleared_before_the_next_query() -> None:
    script = [(b"*IDN?\n", [(0.45, b"late\n")]), (b"*IDN?\n", [(0.0, IDN)])]
    async with timed_peer(script) as peer:
        smu = smu_at(peer.visa_resource, timeout_s=0.3)
        await smu.connect()
        try:
            with pytest.raises(DeviceTimeout):
                await smu.identify()
            await asyncio.sleep(0.35)  # the late reply has arrived by now
            identity = await smu.identify()
        finally:
            await smu.close()
    assert identity.serial == "04096331"


async def test_a_closed_connection_is_reported_then_reopened_with_safety_forgotten() -> None:
    steps = [*verify_safe_steps(), *configure_steps(), (b"*IDN?\n", IDN)]
    script = [(request, [(0.0, reply)] if reply else []) for request, reply in steps]
    async with timed_peer(script, linger_s=0.05) as first:
        smu = smu_at(first.visa_resource, timeout_s=0.5)
        try:
            await smu.connect()
            await smu.verify_safe(2.0)
            await smu.configure_galvanostatic(PLATING)
            await smu.identify()
        except BaseException:
            await smu.close()
            raise
    # The instrument closed the connection (rebooted); it listens again on the same port.
    try:
        async with timed_peer([(b"*IDN?\n", [(0.0, IDN)])], port=first.port) as second:
            with pytest.raises(DeviceDisconnected):
                await smu.identify()
            identity = await smu.identify()
            with pytest.raises(UnsafeSetting, match="verify_safe"):
                await smu.output(True)
            await smu.close()
    finally:
        await smu.close()
    assert second.received == [b"*IDN?\n"]
    assert identity.model == "MODEL 2450"


async def test_connect_to_a_port_without_listener_is_disconnected() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    smu = smu_at(f"TCPIP0::127.0.0.1::{port}::SOCKET")
    try:
        with pytest.raises(DeviceDisconnected) as caught:
            await smu.connect()
    finally:
        await smu.close()
    assert caught.value.command.startswith("open TCPIP0::127.0.0.1::")


async def test_calls_before_connect_are_refused_and_settings_are_validated() -> None:
    smu = smu_at("TCPIP0::127.0.0.1::9::SOCKET")
    with pytest.raises(DeviceDisconnected):
        await smu.read()
    with pytest.raises(ValueError, match="current_a"):
        await smu.set_current_a(math.nan)
    with pytest.raises(ValueError, match="nplc"):
        await smu.configure_galvanostatic(GalvanostaticConfig(current_a=0.0, voltage_limit_v=1.0, nplc=50))
    with pytest.raises(ValueError, match="voltage_limit_v"):
        await smu.verify_safe(-1.0)


def test_parse_system_error() -> None:
    assert parse_system_error('-113,"Undefined header"') == ScpiError(-113, "Undefined header")
    assert parse_system_error('0,"No error;0;1970/01/01 00:00:00.000"').code == 0
    assert str(ScpiError(-222, "Data out of range")) == '-222,"Data out of range"'
    with pytest.raises(DeviceProtocolError):
        parse_system_error("No error")
