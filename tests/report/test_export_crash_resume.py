"""A run killed (-9) while plating and continued with `rig resume RUN_DIR` exports as one BDF table that the
Battery Data Format validator accepts with zero test-time drops.

Skipped while `rig resume RUN_DIR` (issue 6) is not on this line yet; the pause/resume export test covers the
interruption meanwhile.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from hardware_sim.control_port import control_request
from rig.export import export_run
from rig.store import FLAG_RESUMED, read_events, read_samples
from tests.support.waiting import wait_for

bdf = pytest.importorskip("bdf", reason="the Battery Data Format validator (pip install batterydf)")
SHORT = Path(__file__).parents[1] / "engine" / "short_protocol.yaml"
SPEED = 100.0


def test_export_of_a_run_killed_while_plating_and_resumed(tmp_path: Path) -> None:
    env = os.environ.copy()
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "xdg")
    (tmp_path / "xdg").mkdir()
    cfg, ready = tmp_path / "sim-rig.toml", tmp_path / "ready.json"
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hardware_sim",
            "--speed",
            str(SPEED),
            "--config-out",
            str(cfg),
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs = tmp_path / "runs"
    rig_cmd = [sys.executable, "-c", "from rig.cli import app; app()"]
    proc: subprocess.Popen[bytes] | None = None
    try:
        wait_for(ready.exists, 30, "the simulator")
        control = json.loads(ready.read_text())["control"]
        proc = subprocess.Popen(
            [*rig_cmd, "run", str(SHORT), "--config", str(cfg), "--runs", str(runs)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        wait_for(lambda: control_request(control, {"cmd": "state"})["state"]["current_a"] < -1e-5, 120, "plating")
        time.sleep(0.6)  # a minute into the six-minute plate
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        (run_dir,) = [d for d in runs.iterdir() if d.is_dir()]
        out = subprocess.run([*rig_cmd, "resume", str(run_dir)], capture_output=True, text=True, env=env, timeout=240)
        assert out.returncode == 0, out.stdout + out.stderr
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sim.send_signal(signal.SIGTERM)
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait(10)
    events = read_events(run_dir / "run.sqlite")
    assert any(e["kind"] == "resume" and "crash resume" in e["message"] for e in events)
    samples = read_samples(run_dir / "run.sqlite")
    assert any(s.flags & FLAG_RESUMED for s in samples)
    res = export_run(run_dir, fmt="bdf-csv", out=tmp_path / "crash.bdf.csv")
    assert res.time_drops_repaired == 0  # the store's own test time is monotonic across the resume
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep = bdf.validate(res.data_path)
    assert rep["ok"] and rep["time_stats"]["violations"] == 0, rep
    assert not any("Non-monotonic" in str(w.message) for w in caught)
    df = bdf.io.load(res.data_path)
    t = df["Test Time / s"].to_numpy()
    assert all(b >= a for a, b in itertools.pairwise(t))
    resumed = df[(df["Flags / 1"].astype(int) & FLAG_RESUMED) != 0]
    assert len(resumed) >= 1
    meta = json.loads(res.metadata_path.read_text())
    assert any("crash resume" in e["message"] for e in meta["run"]["events"])
