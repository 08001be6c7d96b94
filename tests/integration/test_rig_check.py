"""`rig check` as an operator runs it: the simulator in its own process, the check as a command, faults from a third.

The simulator writes the rig configuration for its endpoints (`--config-out`); `rig check --config` reads it.
Faults are injected through the simulator's control port with `python -m hardware_sim fault`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware_sim.control_port import control_request
from tests.sim.sim_process import SimProcess, sim_process

DEVICES = ("load cell", "press", "potentiostat")


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[SimProcess]:
    """`python -m hardware_sim --speed 10` in its own process; terminated (then killed) at teardown."""
    with sim_process(tmp_path, "--speed", "10") as sim:
        yield sim


def rig_command() -> list[str]:
    """The installed `rig` entry point, or the same app through this interpreter."""
    found = shutil.which("rig")
    if found is not None:
        return [found]
    return [sys.executable, "-c", "from rig.cli.app import app; app()"]


def run(args: list[str], *, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a command; a wide terminal so that no message is wrapped across lines."""
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1"}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)


def rig_check(config: Path) -> subprocess.CompletedProcess[str]:
    """`rig check --config CONFIG`."""
    return run([*rig_command(), "check", "--config", str(config)])


def inject(sim: SimProcess, device: str, *settings: str) -> None:
    """`python -m hardware_sim fault --control HOST:PORT DEVICE NAME=VALUE...` from another process."""
    done = run([sys.executable, "-m", "hardware_sim", "fault", "--control", sim.control, device, *settings])
    assert done.returncode == 0, done.stdout + done.stderr
    assert control_request(sim.control, {"cmd": "faults"})["faults"][device], f"fault on {device} not set"


def device_line(output: str, device: str) -> str:
    """The headline `rig check` prints for one device."""
    match = re.search(rf"^{re.escape(device)}\s+(OK|FAILED)\b.*$", output, flags=re.MULTILINE)
    assert match is not None, f"no line for {device!r} in:\n{output}"
    return match.group(0)


def test_rig_check_passes_against_the_running_simulator(simulator: SimProcess) -> None:
    done = rig_check(simulator.config_path)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "load cell  OK  generic RS-485 Modbus load-cell transmitter" in device_line(out, "load cell")
    assert "press  OK  Leadshine" in device_line(out, "press")
    assert "potentiostat  OK  KEITHLEY INSTRUMENTS MODEL 2450 sn 04512345" in device_line(out, "potentiostat")
    # the safety settings as read back, one fresh reading each
    for setting in ("zero_tracking_range = 0", "creep_tracking_time = 0", "limits_enabled = True"):
        assert setting in out
    assert "output_off_mode = HIMP" in out
    assert re.search(r"reading\s+-?\d+\.\d{3} N \(OK\)", out)
    assert re.search(r"reading\s+OCV 1\.\d{4} V", out)
    assert "all devices OK" in out and "FAILED" not in out


@pytest.mark.parametrize(
    ("device", "name", "why"),
    [
        (
            "loadcell",
            "load cell",
            r"DeviceTimeout: load cell: FC03 read 0x0006 \(firmware version\) on slave 1 via rs485: "
            r"no reply \(nothing came back\) within 0\.300 s",
        ),
        (
            "stepper",
            "press",
            r"DeviceTimeout: press: FC03 read 0x1003 \(motion status\) on slave 2 via rs485: no reply",
        ),
    ],
)
def test_rig_check_fails_naming_a_silenced_device_and_why(
    simulator: SimProcess, device: str, name: str, why: str
) -> None:
    inject(simulator, device, "no_reply=true")
    done = rig_check(simulator.config_path)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "FAILED" in device_line(out, name)
    assert re.search(rf"^FAILED {name}: {why}", out, flags=re.MULTILINE), out
    # the other devices are still checked, and pass
    for other in DEVICES:
        if other != name:
            assert " OK " in device_line(out, other)
    assert "all devices OK" not in out


def test_rig_check_reports_an_active_press_alarm_and_does_not_reset_it(simulator: SimProcess) -> None:
    inject(simulator, "stepper", "alarm_code=336")  # 0x0150 encoder disconnected
    done = rig_check(simulator.config_path)
    assert done.returncode == 1
    failed = (
        r"^FAILED press: DeviceAlarm: press: read 0x2203 \(alarm code\) on slave 2: "
        r"alarm 0x0150 \(encoder disconnected\) is active"
    )
    assert re.search(failed, done.stdout, flags=re.MULTILINE), done.stdout
    # the cause goes away; the drive's alarm stays latched, and `rig check` never resets it
    control_request(simulator.control, {"cmd": "clear", "device": "stepper"})
    again = rig_check(simulator.config_path)
    assert again.returncode == 1
    assert re.search(failed, again.stdout, flags=re.MULTILINE), again.stdout


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ("capacity_n = 100.0", "capacity_n = -5.0", "{file}: load_cell.capacity_n: ", "greater than 0"),
        ("timeout_s = 5.0", "timeout_sec = 5.0", "{file}: potentiostat.timeout_sec: ", "unknown key"),
        # a cross-field error has no single location; the message names the key (rig/cli/app.py prints it as
        # rich markup, which swallows the "[buses.rs232]" in "names no [buses.rs232] section": not asserted)
        ('bus = "rs485"', 'bus = "rs232"', "load_cell.bus = 'rs232'", "have ['gauge', 'rs485']"),
        # a transmitter calibrated in grams with the default scale would read grams as newtons
        ('unit = "N"', 'unit = "g"', "{file}: load_cell: ", "scale_to_n = 1 N per unit contradicts unit = 'g'"),
    ],
)
def test_a_broken_config_exits_2_naming_the_file_and_the_key(
    simulator: SimProcess, tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    text = simulator.config_path.read_text()
    assert old in text
    broken = tmp_path / "broken.toml"
    broken.write_text(text.replace(old, new, 1))
    done = rig_check(broken)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert str(broken) in out
    assert message in out
    assert key.format(file=broken) in out
