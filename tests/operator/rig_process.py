"""A `rig run` (or `rig resume`) as its own process, and the simulator's ground truth, for the operator tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hardware_sim.control_port import control_request
from tests.support.rig_cli import RIG, run_rig
from tests.support.waiting import wait_for

HERE = Path(__file__).parent
ENGINE = HERE.parent / "engine"
SHORT = ENGINE / "short_protocol.yaml"  # 180 kPa: pressure, plate 216 s, strip
PLATE_ONLY = ENGINE / "plate_only_protocol.yaml"  # 150 kPa, one 216 s plate
LONG_PLATE = HERE / "long_plate.yaml"  # 150 kPa, one 2 h plate: still plating whenever a test looks


@contextlib.contextmanager
def rig_process(*args: str, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """`rig ARGS` in the background (stdout and stderr captured together); killed if still running at the end."""
    proc = subprocess.Popen([*RIG, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def run_dir_of(runs: Path, timeout_s: float = 60.0) -> Path:
    """The one run folder under `runs` once its simulator is ready (a --sim run)."""
    found: list[Path] = wait_for(lambda: list(runs.glob("*/sim-ready.json")), timeout_s, "the simulator")
    return found[0].parent


def sim_info(run_dir: Path) -> dict[str, Any]:
    """A --sim run's simulator: endpoints, control port and PID (its ready file)."""
    info: dict[str, Any] = json.loads((run_dir / "sim-ready.json").read_text())
    return info


def truth(control: str) -> dict[str, Any]:
    """The simulated rig's ground truth."""
    state: dict[str, Any] = control_request(control, {"cmd": "state"})["state"]
    return state


def alive(pid: int) -> bool:
    """True while process `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def kill_hard(pid: int) -> None:
    """SIGKILL, ignoring a process already gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def summary(run_dir: Path) -> dict[str, Any]:
    """The run's summary.json."""
    data: dict[str, Any] = json.loads((run_dir / "summary.json").read_text())
    return data


def rig_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    """`rig ARGS` that must succeed and print JSON (status, pause, resume, abort)."""
    out = run_rig(*args, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    reply: dict[str, Any] = json.loads(out.stdout)
    return reply
