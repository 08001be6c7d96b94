"""Headless pieces: the sd_notify datagram and the JSON-lines log."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from rig.sd_notify import notify, watchdog_interval_s


def test_notify_sends_a_datagram_to_the_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        s.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1")
        assert s.recv(64) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not notify("WATCHDOG=1")  # not under systemd: a no-op


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval_s() is None


def test_json_log_writes_one_object_per_line_to_the_file_and_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rig.data.json_log import JsonLog

    log = JsonLog(tmp_path / "run.log.jsonl")
    log.event("state", "running -> suspended: load cell stale", {"condition": "force"})
    log.close()
    line = (tmp_path / "run.log.jsonl").read_text().splitlines()[0]
    rec = json.loads(line)
    assert rec["type"] == "event" and rec["kind"] == "state" and rec["data"] == {"condition": "force"}
    assert json.loads(capsys.readouterr().err.splitlines()[0]) == rec
