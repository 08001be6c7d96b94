"""The async serial line transport, over a real TCP peer reached as socket://."""

from __future__ import annotations

import asyncio
import socket
import threading
from types import SimpleNamespace

import pytest

import drivers.serial_line as serial_line_module
from drivers.errors import DeviceDisconnected, DeviceProtocolError
from drivers.serial_line import SerialLine, find_port_by_usb_serial
from tests.drivers.timed_peer import timed_peer
from tests.support.expected_protocol import expected_protocol


def _unused_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _worker_threads(device: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"serial-line-{device}")]


async def test_query_returns_the_reply_line_and_close_stops_the_worker_thread() -> None:
    async with expected_protocol([(b"PING\r\n", b"PONG\r\n")]) as peer:
        line = SerialLine(device="probe-a", url=peer.serial_url)
        await line.open()
        try:
            reply = await line.query_line(b"PING\r\n", timeout_s=1.0)
            assert _worker_threads("probe-a"), "the worker thread should exist while open"
        finally:
            await line.close()
    assert reply == b"PONG\r\n"
    assert line.at_line_start is None and not line.is_open
    assert _worker_threads("probe-a") == []


async def test_a_line_longer_than_the_limit_is_a_protocol_error() -> None:
    async with expected_protocol([(b"?\r\n", b"x" * 40)], check_extra_s=1.0) as peer:
        line = SerialLine(device="probe", url=peer.serial_url, max_line_bytes=16)
        await line.open()
        try:
            with pytest.raises(DeviceProtocolError) as caught:
                await line.query_line(b"?\r\n", timeout_s=1.0, command="?")
        finally:
            await line.close()
    assert caught.value.command == "?"
    assert isinstance(caught.value.reply, bytes) and caught.value.reply.startswith(b"x" * 16)


async def test_opening_a_port_that_is_not_there_names_the_path() -> None:
    url = f"socket://127.0.0.1:{_unused_tcp_port()}"
    line = SerialLine(device="probe", url=url)
    try:
        with pytest.raises(DeviceDisconnected) as caught:
            await line.open()
    finally:
        await line.close()
    assert caught.value.command == f"open {url}"


async def test_unknown_usb_serial_number_without_fallback_url_is_disconnected() -> None:
    line = SerialLine(device="probe", usb_serial_number="NOPE", port_finder=lambda _sn: None)
    try:
        with pytest.raises(DeviceDisconnected, match="NOPE"):
            await line.open()
    finally:
        await line.close()


def test_find_port_by_usb_serial_matches_the_serial_number(monkeypatch: pytest.MonkeyPatch) -> None:
    ports = [
        SimpleNamespace(device="/dev/ttyUSB0", serial_number="OTHER"),
        SimpleNamespace(device="/dev/ttyACM3", serial_number="MK10-42"),
        SimpleNamespace(device="/dev/ttyS0", serial_number=None),
    ]
    monkeypatch.setattr(serial_line_module.serial.tools.list_ports, "comports", lambda: ports)
    assert find_port_by_usb_serial("MK10-42") == "/dev/ttyACM3"
    assert find_port_by_usb_serial("MISSING") is None


async def test_lost_port_raises_disconnected_then_the_next_call_reopens_by_serial_number() -> None:
    paths: dict[str, str] = {}
    line = SerialLine(device="probe", usb_serial_number="SN1", port_finder=paths.get)
    try:
        async with expected_protocol([(b"?\r\n", b"1\r\n")]) as first:
            paths["SN1"] = first.serial_url
            await line.open()
            assert await line.query_line(b"?\r\n", timeout_s=1.0) == b"1\r\n"
        async with expected_protocol([(b"?\r\n", b"2\r\n")]) as second:
            paths["SN1"] = second.serial_url
            with pytest.raises(DeviceDisconnected):
                await line.query_line(b"?\r\n", timeout_s=1.0)
            assert not line.is_open
            assert await line.query_line(b"?\r\n", timeout_s=1.0) == b"2\r\n"
            assert line.path == second.serial_url
            await line.close()
    finally:
        await line.close()


async def test_a_cancelled_query_does_not_leave_its_late_reply_for_the_next_one() -> None:
    script = [(b"?\r\n", [(0.2, b"late\r\n")]), (b"?\r\n", [(0.0, b"fresh\r\n")])]
    async with timed_peer(script) as peer:
        line = SerialLine(device="probe", url=peer.serial_url)
        await line.open()
        try:
            task = asyncio.create_task(line.query_line(b"?\r\n", timeout_s=1.0))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            reply = await line.query_line(b"?\r\n", timeout_s=1.0)
        finally:
            await line.close()
    assert reply == b"fresh\r\n"
