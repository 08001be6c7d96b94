"""Issue 14 A3: `rig safe` makes a rig safe with no controller running.

A controller killed with -9 during plating leaves the 2450 sourcing (a separately started simulator stands for the
real rig, which does not go away). `rig safe RUN` switches the output off into HIGH-Z and reads it back, reports the
source level and the charge passed since the run's last record, holds the press where it is, records an event in
the run's store, and starts nothing; a later `rig resume RUN` counts that charge. `rig safe --release` also takes
the loaded stack over and releases it to zero force. While a controller runs, `rig safe` is refused (test A2).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from rig.data.store import read_events, read_last_sample
from tests.operator.rig_process import LONG_PLATE, PLATE_ONLY, rig_process, summary, truth
from tests.sim.sim_process import SimProcess, sim_process
from tests.support.rig_cli import rig_env, run_rig
from tests.support.waiting import wait_for

PLATE_S = 216.0  # the plate-only protocol's plate: 0.03 mAh/cm^2 at 0.5 mA/cm^2


def _status(env: dict[str, str]) -> dict[str, Any] | None:
    out = run_rig("status", env=env)
    if out.returncode != 0:
        return None
    reply: dict[str, Any] = json.loads(out.stdout)
    return reply


def _killed_while_plating(sim: SimProcess, protocol: Path, runs: Path, env: dict[str, str]) -> Path:
    with rig_process("run", str(protocol), "--config", str(sim.config_path), "--runs", str(runs), env=env) as proc:
        wait_for(lambda: truth(sim.control)["current_a"] < -1e-5, 120, "plating")
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    return next(d for d in runs.iterdir() if d.is_dir())


def test_rig_safe_switches_the_output_off_counts_the_charge_and_resume_continues(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    runs = tmp_path / "runs"
    with sim_process(tmp_path, "--speed", "20") as sim:
        run_dir = _killed_while_plating(sim, PLATE_ONLY, runs, env)
        last = read_last_sample(run_dir / "run.sqlite")
        time.sleep(1.0)  # 20 s of experiment time unattended, still plating
        before = truth(sim.control)
        safe: subprocess.CompletedProcess[str] = run_rig("safe", str(run_dir), env=env, timeout=60)
        after = truth(sim.control)
        time.sleep(0.5)
        later = truth(sim.control)
        with rig_process("resume", str(run_dir), env=env) as resuming:
            status = wait_for(lambda: _status(env), 60, "the resumed run's status")
            rc = resuming.wait(240)
            said = resuming.stdout.read() if resuming.stdout else ""
    assert before["current_a"] < -1e-5  # the killed controller had left it plating
    assert safe.returncode == 0, safe.stdout + safe.stderr
    assert "output was ON" in safe.stdout and ":OUTP? reads off" in safe.stdout and "held where it is" in safe.stdout
    assert after["current_a"] == 0.0 and after["source_mode"] == "open"  # off into HIGH-Z: never shorted
    assert later["plated_c"] == after["plated_c"] and later["counter_pulses"] == after["counter_pulses"]
    assert "Traceback" not in safe.stdout + safe.stderr
    events = read_events(run_dir / "run.sqlite")
    (ev,) = [e for e in events if e["kind"] == "safe"]
    assert last is not None and ev["test_time_s"] > last.test_time_s  # test time stays monotonic
    # the charge since the last record: the truth's plated charge at the switch-off, less what the store had
    assert ev["data"]["output_was_on"] is True and ev["data"]["output_on_after"] is False
    truth_c = after["plated_c"]
    stored_c = last.charge_c  # the step's charge at the last record (the step began with nothing plated)
    # within the uncertainty rig safe states (the window the output went off in), plus 50 ms of wall time's charge
    # for the start of the step (the engine counts from the output-on command, the cell from its arrival)
    tolerance_c = ev["data"]["charge_uncertainty_c"] + abs(before["current_a"]) * 20 * 0.05
    assert abs(stored_c + ev["data"]["charge_c"] - truth_c) <= tolerance_c
    assert rc == 0, said
    assert summary(run_dir)["state"] == "completed"
    # the display and `rig status` continue at the step the run was in, with what is left of the plan (C13)
    assert str(status["step"]).startswith("2/2 plate"), status
    assert status["remaining_s"] <= PLATE_S + 1.0 and status["elapsed_s"] > last.test_time_s
    readback = [e for e in read_events(run_dir / "run.sqlite") if e["kind"] == "resume" and "readback" in e["message"]]
    assert readback and "the output was off; `rig safe` counted" in readback[0]["message"]


def test_rig_safe_release_takes_the_loaded_stack_to_zero_force(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    runs = tmp_path / "runs"
    with sim_process(tmp_path, "--speed", "20") as sim:
        run_dir = _killed_while_plating(sim, LONG_PLATE, runs, env)
        loaded = truth(sim.control)
        out = run_rig("safe", str(run_dir), "--release", env=env, timeout=240)
        after = truth(sim.control)
    assert loaded["pressure_kpa"] > 140.0
    assert out.returncode == 0, out.stdout + out.stderr
    assert "released from" in out.stdout
    assert after["current_a"] == 0.0 and after["source_mode"] == "open"
    assert abs(after["force_n"]) < 0.5  # the stack is free (the press backed off past contact)
    (ev,) = [e for e in read_events(run_dir / "run.sqlite") if e["kind"] == "safe"]
    assert "released from" in ev["data"]["released"]
