"""The simulator as `rig run --sim` uses it: its own process, in its own session, watched by it in turn.

The simulator runs as `python -m hardware_sim` in a new session, so a terminal hang-up or Ctrl-C reaches only the
controller (which makes the rig safe and then stops the simulator itself). It is told the controller's PID: if the
controller dies without stopping it (kill -9, a crash), the simulated rig goes on as a real one would and waits a
grace period for `rig resume RUN` to attach to it again (`attach`), then exits (hardware_sim.controller_watch).
The supervisor never imports the simulator: this module only starts a process and speaks its control port's JSON
lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ORPHAN_GRACE_S = 600.0  # wall seconds a simulator waits for a controller to attach again


class SimulatorError(Exception):
    """The simulator could not be started or reached; the message says why."""


@dataclass
class SimHandle:
    """A simulator process started for this run."""

    proc: subprocess.Popen[bytes]
    config_path: Path
    endpoints: dict[str, str]


@contextlib.contextmanager
def start_simulator(
    run_dir: Path,
    *,
    speed: float,
    electrolyte: str,
    diameter_mm: float,
    orphan_grace_s: float = DEFAULT_ORPHAN_GRACE_S,
) -> Iterator[SimHandle]:
    """Run the simulator as its own process for this run (its timing stays honest); stop it afterwards."""
    ready = run_dir / "sim-ready.json"
    config = run_dir / "sim-rig.toml"
    cmd = [
        sys.executable,
        "-m",
        "hardware_sim",
        "--speed",
        str(speed),
        "--electrolyte",
        electrolyte,
        "--electrode-diameter-mm",
        f"{diameter_mm:.4f}",
        "--config-out",
        str(config),
        "--ready-file",
        str(ready),
        "--controller-pid",
        str(os.getpid()),
        "--orphan-grace-s",
        f"{orphan_grace_s:g}",
    ]
    with (run_dir / "sim.log").open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30.0
        while not ready.exists():
            if proc.poll() is not None:
                raise SimulatorError(f"the simulator exited ({proc.returncode}); see {run_dir / 'sim.log'}")
            if time.monotonic() > deadline:
                raise SimulatorError(f"the simulator did not start within 30 s; see {run_dir / 'sim.log'}")
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        yield SimHandle(proc, config, {k: v for k, v in info.items() if k not in ("config", "pid")})
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def control(address: str, request: dict[str, Any], *, timeout_s: float = 3.0) -> dict[str, Any]:
    """One request to a simulator's control port ('host:port', JSON lines); SimulatorError when it is not there."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    raise SimulatorError(f"the simulator's control port {address} closed without a reply")
                buf += chunk
    except (OSError, ValueError) as exc:
        raise SimulatorError(f"the simulator's control port {address} does not answer ({exc})") from None
    reply = json.loads(buf)
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise SimulatorError(f"the simulator at {address} refused {request.get('cmd')!r}: {reply}")
    return reply


def attach(address: str) -> dict[str, Any]:
    """This process takes the simulated rig over (rig resume of a --sim run); returns how long it was unattended."""
    return control(address, {"cmd": "attach", "pid": os.getpid()})


def shutdown(address: str) -> None:
    """Stop a simulator this process attached to (it is not our child: no signal can reach it reliably)."""
    with contextlib.suppress(SimulatorError):
        control(address, {"cmd": "shutdown"})
