"""A run killed (-9) while plating and continued with `rig resume RUN_DIR` exports as one BDF table that the
Battery Data Format validator accepts with zero test-time drops (skipped only where `batterydf` is missing).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
import warnings
from pathlib import Path

import pytest

from hardware_sim.control_port import control_request
from rig.data.export import export_run
from rig.data.store import FLAG_RESUMED, read_events, read_samples
from tests.sim.sim_process import sim_process
from tests.support.rig_cli import RIG, rig_env, run_rig
from tests.support.waiting import wait_for

bdf = pytest.importorskip("bdf", reason="the Battery Data Format validator (pip install batterydf)")
SHORT = Path(__file__).parents[1] / "engine" / "short_protocol.yaml"
SPEED = 100.0


def test_export_of_a_run_killed_while_plating_and_resumed(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    runs = tmp_path / "runs"
    with sim_process(tmp_path, "--speed", str(SPEED)) as sim:
        proc = subprocess.Popen(
            [*RIG, "run", str(SHORT), "--config", str(sim.config_path), "--runs", str(runs)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:

            def plating() -> bool:
                return bool(control_request(sim.control, {"cmd": "state"})["state"]["current_a"] < -1e-5)

            wait_for(plating, 120, "plating")
            time.sleep(0.6)  # a minute into the six-minute plate
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            (run_dir,) = [d for d in runs.iterdir() if d.is_dir()]
            out = run_rig("resume", str(run_dir), env=env, timeout=240)
            assert out.returncode == 0, out.stdout + out.stderr
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
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
