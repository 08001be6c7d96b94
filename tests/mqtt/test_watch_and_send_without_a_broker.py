"""Issue 14 item 9 (MQTT part): `rig watch` and `rig send` without a reachable broker, or with the wrong password.

Each gives one line naming the broker (host:port) and what to do, exits non-zero, and prints no traceback; run as
the operator runs them (tests/support/rig_cli.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mqtt.broker import Broker, free_port
from tests.support.rig_cli import rig_env, run_rig


def one_line_error(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    return lines[0]


@pytest.mark.parametrize("command", [("watch", "--duration", "5"), ("send", "pause", "--rig", "rig-a")])
def test_no_broker_is_one_line_naming_it(command: tuple[str, ...], tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    done = run_rig(*command, "--broker", f"127.0.0.1:{port}", env=rig_env(tmp_path), timeout=30)
    out = done.stdout + done.stderr
    assert done.returncode not in (0, None) and "Traceback" not in out and "╭" not in out, out
    line = one_line_error(out)
    assert f"127.0.0.1:{port}" in line and "--broker" in line and line.startswith(f"rig {command[0]}:"), line


@pytest.mark.parametrize("command", [("watch", "--duration", "5"), ("send", "pause", "--rig", "rig-a")])
def test_a_refused_login_is_one_line_naming_the_broker(
    command: tuple[str, ...], broker: Broker, tmp_path: Path
) -> None:
    args = ("--broker", f"127.0.0.1:{broker.port}", "--username", "operator", "--password", "wrong")
    done = run_rig(*command, *args, env=rig_env(tmp_path), timeout=30)
    out = done.stdout + done.stderr
    assert done.returncode not in (0, None) and "Traceback" not in out and "╭" not in out, out
    line = one_line_error(out)
    assert f"127.0.0.1:{broker.port}" in line and "--username" in line, line
