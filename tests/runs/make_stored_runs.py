"""Make the stored runs the run-index and porosity tests read (`tests/runs/stored/*.tar.gz`).

Each is a real `rig run ... --sim` run, made as an operator would and packed as its run folder:

- `completed-1000x`: the short test protocol at 1000x, completed (the report printed `-37 % (1σ −∞ … 52 %)`);
- `library-1000x`: the library's DME 180 kPa plate/strip at 1000x, completed (`-316 % (1σ −∞ … -56 %)`);
- `aborted`: the short protocol at 200x, `rig abort` while plating (`100 % (1σ 100 … 100 %)`, called resolved);
- `killed`: the short protocol at 200x, `kill -9` of `rig run` (and its simulator) while plating (`98 % (1σ −∞ …
  100 %)`).

Another make of the same kind gives other numbers (the timing of an accelerated run varies); the tests read what
the stored runs hold, not these figures.

The runs are made in a temporary folder with relative paths, so no machine path ends up in them; the simulator's
log is left out. Run from the repository root: `python tests/runs/make_stored_runs.py [KIND...]`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from hardware_sim.control_port import control_request
from tests.support.rig_cli import RIG, rig_env
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
STORED = Path(__file__).resolve().parent / "stored"
SHORT = Path("tests/engine/short_protocol.yaml")
LIBRARY = Path("protocols/library/dme_180kpa_plate_strip.yaml")


def _start(work: Path, protocol: Path, speed: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [*RIG, "run", str(protocol), "--sim", "--speed", str(speed), "--runs", "runs", "--socket", "op.sock"]
    return subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _run_dir(work: Path) -> Path:
    dirs = wait_for(lambda: [d for d in (work / "runs").glob("*") if (d / "sim-ready.json").exists()], 60, "a run")
    return Path(dirs[0])


def _wait_plating(run_dir: Path) -> None:
    control = json.loads((run_dir / "sim-ready.json").read_text())["control"]
    wait_for(lambda: control_request(control, {"cmd": "state"})["state"]["current_a"] < -1e-5, 120, "plating")


def make(kind: str, work: Path) -> Path:
    """One stored run of `kind` made in `work`; returns its run folder."""
    env = rig_env(work, PYTHONPATH=str(REPO))  # this checkout's code, though the runs are made elsewhere
    for rel in (SHORT, LIBRARY):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, work / rel)
    protocol, speed = {
        "completed-1000x": (SHORT, 1000),
        "library-1000x": (LIBRARY, 1000),
        "aborted": (SHORT, 200),
        "killed": (SHORT, 200),
    }[kind]
    proc = _start(work, protocol, speed, env)
    try:
        run_dir = _run_dir(work)
        if kind == "aborted":
            _wait_plating(run_dir)
            time.sleep(0.6)
            subprocess.run([*RIG, "abort", "--socket", "op.sock"], cwd=work, env=env, check=True, timeout=30)
        elif kind == "killed":
            _wait_plating(run_dir)
            time.sleep(0.8)
            os.killpg(proc.pid, signal.SIGKILL)  # rig run and the simulator it started
        proc.wait(600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    (run_dir / "sim.log").unlink(missing_ok=True)
    ready = json.loads((run_dir / "sim-ready.json").read_text())
    ready["config"] = "sim-rig.toml"
    (run_dir / "sim-ready.json").write_text(json.dumps(ready))
    for path in run_dir.rglob("*"):
        if path.is_file() and str(work).encode() in path.read_bytes():
            raise RuntimeError(f"{path} holds the machine path {work}")
    return run_dir


def main(kinds: list[str]) -> None:
    """Make and pack the runs named (all by default)."""
    STORED.mkdir(exist_ok=True)
    for kind in kinds or ["completed-1000x", "library-1000x", "aborted", "killed"]:
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = make(kind, Path(tmp))
            with tarfile.open(STORED / f"{kind}.tar.gz", "w:gz") as tar:
                tar.add(run_dir, arcname=run_dir.name)
            print(f"{kind}: {run_dir.name} -> {STORED / (kind + '.tar.gz')}")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main(sys.argv[1:])
