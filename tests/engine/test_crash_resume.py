"""kill -9 during plating, then `rig resume RUN_DIR` (issue 6): the simulator process outlives the killed run."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from hardware_sim.control_port import control_request
from rig.data.store import read_events, read_samples
from tests.conftest import FaultFigure
from tests.sim.sim_process import sim_process
from tests.support.rig_cli import RIG, rig_env, run_rig
from tests.support.waiting import wait_for

HERE = Path(__file__).parent
PROTOCOL = HERE / "plate_only_protocol.yaml"
SPEED = 10.0  # 1 s of experiment time is 100 ms of wall time: a busy host's scheduling delays stay well inside it


def test_kill_9_during_plating_then_rig_resume(tmp_path: Path, fault_figure: FaultFigure) -> None:
    env = rig_env(tmp_path)
    runs = tmp_path / "runs"
    with sim_process(tmp_path, "--speed", str(SPEED)) as sim:
        control, cfg = sim.control, sim.config_path

        def truth() -> dict[str, Any]:
            state: dict[str, Any] = control_request(control, {"cmd": "state"})["state"]
            return state

        proc = subprocess.Popen(
            [*RIG, "run", str(PROTOCOL), "--config", str(cfg), "--runs", str(runs)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            wait_for(lambda: truth()["current_a"] < -1e-5, 180, "plating")
            time.sleep(3.0)  # 30 s into the 216 s plate
            os.kill(proc.pid, signal.SIGKILL)
            t_kill_unix = time.time()
            proc.wait(10)
            run_dir = next(d for d in runs.iterdir() if d.is_dir())
            before = read_samples(run_dir / "run.sqlite")
            time.sleep(0.5)  # the cell keeps plating with nobody watching (the output stays on)
            out = run_rig("resume", str(run_dir), env=env, timeout=240)
            assert out.returncode == 0, out.stdout + out.stderr
            plated_truth_c = float(truth()["plated_c"])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    samples = read_samples(run_dir / "run.sqlite")
    lost_s = (t_kill_unix - before[-1].unix_time_s) * SPEED
    times = [s.test_time_s for s in samples]
    events = read_events(run_dir / "run.sqlite")
    plate_c = sum(e["data"]["charge_c"] for e in events if e["kind"] == "step_end" and "plate" in e["message"])
    err = abs(plate_c - plated_truth_c) / plated_truth_c
    print(
        f"\ncrash resume: samples lost {lost_s:.3f} s; plate charge {plate_c:.6g} C vs truth "
        f"{plated_truth_c:.6g} C ({100 * err:.4f} %)"
    )
    drops = sum(1 for a, b in itertools.pairwise(times) if b <= a)
    fault_figure(9, "samples lost", f"{lost_s:.2f} s (exp.)", goal="≤ 1 s", met=lost_s <= 1.0)
    fault_figure(9, "test-time drops", str(drops), goal="0", met=drops == 0)
    fault_figure(9, "plated charge error", f"{100 * err:.4f} %", goal="≤ 0.1 %", met=err <= 0.001)
    assert lost_s <= 1.0
    assert drops == 0 and len(times) > 10  # monotonic across the resume
    assert err <= 0.001
    assert any(e["kind"] == "resume" and "crash resume #1" in e["message"] for e in events)
    assert json.loads((run_dir / "summary.json").read_text())["state"] == "completed"
    conn = sqlite3.connect(run_dir / "run.sqlite")
    try:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    finally:
        conn.close()
