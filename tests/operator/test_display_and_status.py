"""Issue 14 C13: the display and `rig status` at the moments that matter.

- After `rig abort` the reply says aborted with the output off, and at once `rig status` and the display say so
  (with the reason, and "releasing pressure" while that goes on), never "running … −0.5655 mA".
- Paused and suspended come with their reason; `rig status` has the current and the output state, and no voltage
  while the output is off.
- "remaining" counts down within a step.
"""

from __future__ import annotations

import time
from pathlib import Path

from hardware_sim.control_port import control_request
from rig.data.store import read_events
from tests.operator.rig_process import LONG_PLATE, rig_json, rig_process, run_dir_of, sim_info, truth
from tests.support.rig_cli import rig_env
from tests.support.waiting import wait_for


def test_status_and_display_tell_the_truth_through_pause_suspension_and_abort(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    runs = tmp_path / "runs"
    with rig_process("run", str(LONG_PLATE), "--sim", "--speed", "20", "--runs", str(runs), env=env) as proc:
        run_dir = run_dir_of(runs)
        control = sim_info(run_dir)["control"]
        wait_for(lambda: truth(control)["current_a"] < -1e-5, 120, "plating")
        first = wait_for(lambda: (st := rig_json(env, "status"))["output_on"] and st, 30, "running, current on")
        time.sleep(1.0)  # 20 s of experiment time
        second = rig_json(env, "status")
        paused = rig_json(env, "pause")
        in_pause = rig_json(env, "status")
        rig_json(env, "resume")
        wait_for(lambda: rig_json(env, "status")["output_on"], 60, "the current back after the pause")
        control_request(control, {"cmd": "fault", "device": "loadcell", "set": {"no_reply": True}})
        suspended = wait_for(lambda: (st := rig_json(env, "status"))["state"] == "suspended" and st, 30, "suspension")
        control_request(control, {"cmd": "clear", "device": "loadcell"})
        wait_for(lambda: rig_json(env, "status")["output_on"], 60, "the current back after the suspension")
        aborted = rig_json(env, "abort")
        after_abort = rig_json(env, "status")
        rc = proc.wait(120)
        display = proc.stdout.read() if proc.stdout else ""
    # running: the current, the output on, a voltage, and a remaining time that counts down within the step
    assert first["output_on"] is True and abs(first["current_a"] + 0.5655e-3) < 1e-5 and first["voltage_v"] is not None
    # (the step's clock is its charge: a stale-load-cell suspension on a busy host stops both, never one of them)
    counted = first["remaining_s"] - second["remaining_s"]
    plated_s = (second["step_charge_mah"] - first["step_charge_mah"]) * 3.6 / 0.5655e-3
    assert plated_s > 5.0 and abs(counted - plated_s) <= 1.0, (counted, plated_s)
    # paused: the reason, the output off, no current, no voltage
    assert paused["state"] == "paused"
    assert in_pause["state"] == "paused" and in_pause["reason"] == "operator pause"
    assert in_pause["output_on"] is False and in_pause["current_a"] == 0.0 and in_pause["voltage_v"] is None
    # suspended: with its reason
    assert "load cell" in suspended["reason"] and suspended["output_on"] is False
    # aborted: at once, with the output off, while the pressure is released
    assert aborted["state"] == "aborted" and aborted["output_on"] is False and aborted["reason"] == "operator abort"
    assert after_abort["state"] == "aborted" and after_abort["output_on"] is False
    assert after_abort["current_a"] == 0.0 and after_abort["phase"] == "releasing pressure"
    assert rc == 1
    states = [e["message"] for e in read_events(run_dir / "run.sqlite") if e["kind"] == "state"]
    assert sum("-> aborted" in m for m in states) == 1, states  # one abort, said once
    lines = display.splitlines()
    first_abort = next(i for i, ln in enumerate(lines) if " aborted (operator abort)" in ln)
    assert "I=off (HIGH-Z)" in lines[first_abort]
    assert not any(" running " in ln for ln in lines[first_abort:])  # never "running" again after the abort
    assert any("releasing pressure" in ln for ln in lines[first_abort:])
    assert any(" paused (operator pause)" in ln for ln in lines) and any(" suspended (" in ln for ln in lines)
