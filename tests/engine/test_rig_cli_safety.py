"""`rig ack` and `rig run --resume-unfinished` from the command line, against the simulator process (issue 6).

- A load cell that saturates near the hard force limit trips the over-force (it may be real); the trip stays
  latched (no motion, no current, output HIMP) until `rig ack` from another terminal; the run then ends aborted.
- A hard force limit below the rig's maximum setpoint is a configuration error, refused before anything moves; a
  protocol beyond the simulated rig's (overridden) pressure range is refused with its file and line.
- A run killed with -9 during plating is continued by `rig run PROTOCOL --resume-unfinished` in the same folder.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from hardware_sim.control_port import control_request
from rig.data.store import read_events, read_samples
from tests.sim.sim_process import sim_process
from tests.support.rig_cli import RIG, rig_env, run_rig
from tests.support.waiting import wait_for

HERE = Path(__file__).parent
SHORT = HERE / "short_protocol.yaml"  # 180 kPa
PLATE_ONLY = HERE / "plate_only_protocol.yaml"  # 150 kPa, one 216 s plate

AREA_M2 = math.pi * 6e-3**2  # the protocols' 12 mm electrode


def test_a_hard_limit_below_the_maximum_setpoint_is_refused_before_anything_moves(tmp_path: Path) -> None:
    env = rig_env(tmp_path, RIG_RIG__HARD_FORCE_LIMIT_N="13.5")  # below 250 kPa × 1.131 cm² = 28.3 N
    out = run_rig("run", str(SHORT), "--sim", "--speed", "50", "--runs", str(tmp_path / "runs"), env=env, timeout=120)
    assert out.returncode != 0
    said = " ".join((out.stdout + out.stderr).split())
    assert "rig.hard_force_limit_n = 13.5 N must lie above the force of the maximum setpoint" in said
    assert "Traceback" not in out.stdout + out.stderr
    run_dir = next((tmp_path / "runs").iterdir())
    assert not (run_dir / "run.sqlite").exists()  # refused before a store, a device or a move


def test_the_simulated_rigs_own_limits_validate_the_protocol(tmp_path: Path) -> None:
    env = rig_env(tmp_path, RIG_RIG__MAX_PRESSURE_KPA="110", RIG_RIG__HARD_FORCE_LIMIT_N="13.5")
    out = run_rig("run", str(SHORT), "--sim", "--speed", "50", "--runs", str(tmp_path / "runs"), env=env, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "short_protocol.yaml:10:" in out.stderr and "outside the rig's pressure range 10–110 kPa" in out.stderr


def test_an_overforce_trip_stays_latched_until_rig_ack(tmp_path: Path) -> None:
    # the trip 1.6 N above the 180 kPa hold: a saturated load cell there may be a real over-force, so it trips
    limit_n = 22.0
    env = rig_env(tmp_path, RIG_RIG__HARD_FORCE_LIMIT_N=f"{limit_n}", RIG_RIG__MAX_PRESSURE_KPA="190")
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [*RIG, "run", str(SHORT), "--sim", "--speed", "50", "--runs", str(runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        ready = wait_for(lambda: list(runs.glob("*/sim-ready.json")), 60, "the simulator")
        control = json.loads(ready[0].read_text())["control"]

        def truth() -> dict[str, Any]:
            state: dict[str, Any] = control_request(control, {"cmd": "state"})["state"]
            return state

        def status() -> dict[str, Any]:
            out = run_rig("status", env=env)
            assert out.returncode == 0, out.stdout + out.stderr
            st: dict[str, Any] = json.loads(out.stdout)
            return st

        wait_for(lambda: truth()["current_a"] < -1e-5, 240, "plating")
        control_request(control, {"cmd": "fault", "device": "loadcell", "set": {"overload": True}})
        wait_for(lambda: "overforce" in status()["holds"], 60, "the over-force trip")
        wait_for(lambda: truth()["current_a"] == 0.0, 30, "the current off")
        control_request(control, {"cmd": "clear", "device": "loadcell"})
        t0 = truth()
        time.sleep(2.0)  # 100 s of experiment time: a latched trip resumes nothing
        t1 = truth()
        st = status()
        acked = run_rig("ack", env=env)
        assert acked.returncode == 0, acked.stdout + acked.stderr
        reply = json.loads(acked.stdout)
        proc.wait(120)
        output = proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert st["state"] == "suspended" and "overforce" in st["holds"]
    assert t1["counter_pulses"] == t0["counter_pulses"]  # no motion while latched
    assert t1["current_a"] == 0.0 and t1["source_mode"] == "open"  # no current, output HIMP
    assert t1["force_n"] < limit_n  # retreated below the limit
    assert reply["acknowledged"] is True
    assert proc.returncode == 1 and "over-force" in output, output
    run_dir = next(d for d in runs.iterdir() if d.is_dir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["state"] == "aborted"
    events = read_events(run_dir / "run.sqlite")
    acks = [e for e in events if e["kind"] == "operator" and "acknowledged" in e["message"]]
    trips = [e for e in events if "over-force" in e["message"]]
    assert acks and trips and trips[0]["test_time_s"] < acks[0]["test_time_s"]


def test_rig_run_resume_unfinished_continues_a_killed_run_in_its_folder(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    runs = tmp_path / "runs"
    proc: subprocess.Popen[str] | None = None
    with sim_process(tmp_path, "--speed", "20") as sim:
        run_cmd = [*RIG, "run", str(PLATE_ONLY), "--config", str(sim.config_path), "--runs", str(runs)]

        def current_a() -> float:
            return float(control_request(sim.control, {"cmd": "state"})["state"]["current_a"])

        try:
            proc = subprocess.Popen(run_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True, env=env)
            wait_for(lambda: current_a() < -1e-5, 180, "plating")
            time.sleep(2.0)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            again = subprocess.run(
                [*run_cmd, "--resume-unfinished"], capture_output=True, text=True, env=env, timeout=240
            )
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming the unfinished run" in again.stderr
    dirs = [d for d in runs.iterdir() if d.is_dir()]
    assert len(dirs) == 1  # continued in its own folder, no new run
    events = read_events(dirs[0] / "run.sqlite")
    assert any(e["kind"] == "resume" and "crash resume #1" in e["message"] for e in events)
    assert json.loads((dirs[0] / "summary.json").read_text())["state"] == "completed"
    times = [s.test_time_s for s in read_samples(dirs[0] / "run.sqlite")]
    assert len(times) > 10 and all(b > a for a, b in itertools.pairwise(times))
