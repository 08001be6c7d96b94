"""Issue 14 A1: a hang-up never leaves the current on; a simulator whose controller died waits, then goes.

- SIGHUP (an SSH drop, a closed laptop) and SIGQUIT do what SIGTERM does: the safe state, recorded as aborted;
  the simulator started by `--sim` is stopped by its controller afterwards.
- A controller killed with -9 leaves its simulator running as a real rig would (the 2450 keeps sourcing): for the
  grace period `rig resume RUN` attaches to it and completes the run; after it, with no controller, it exits, and
  `rig resume` then says in one line that the simulated cell is gone and marks the run failed.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from rig.data.store import read_events
from tests.operator.rig_process import (
    PLATE_ONLY,
    SHORT,
    alive,
    kill_hard,
    rig_process,
    run_dir_of,
    sim_info,
    summary,
    truth,
)
from tests.support.rig_cli import rig_env, run_rig
from tests.support.waiting import wait_for


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGQUIT])
def test_a_hang_up_makes_the_rig_safe_and_ends_the_run_aborted(sig: signal.Signals, tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    runs = tmp_path / "runs"
    with rig_process("run", str(SHORT), "--sim", "--speed", "50", "--runs", str(runs), env=env) as proc:
        run_dir = run_dir_of(runs)
        sim = sim_info(run_dir)
        wait_for(lambda: truth(sim["control"])["current_a"] < -1e-5, 120, "plating")
        proc.send_signal(sig)
        # the current goes off at once, while the controller still releases the pressure (the simulator is alive)
        off = wait_for(lambda: (t := truth(sim["control"]))["current_a"] == 0.0 and t, 10, "the current off")
        rc = proc.wait(120)
        output = proc.stdout.read() if proc.stdout else ""
    assert off["source_mode"] == "open"  # HIGH-Z: the cell floats, never shorted
    assert rc == 1, output  # not 129 (killed by the signal)
    done = summary(run_dir)
    assert done["state"] == "aborted" and f"signal {sig.name}" in done["reason"]
    events = read_events(run_dir / "run.sqlite")
    assert any(e["kind"] == "state" and "-> aborted" in e["message"] for e in events)
    assert not alive(int(sim["pid"]))  # the controller stopped its simulator: nothing left plating unattended


def _killed_while_plating(tmp_path: Path, env: dict[str, str], grace_s: float) -> tuple[Path, dict[str, Any], float]:
    """A `rig run --sim` killed with -9 once it plates: its run folder, its simulator, when it was killed."""
    runs = tmp_path / "runs"
    args = ("run", str(PLATE_ONLY), "--sim", "--speed", "20", "--sim-grace", f"{grace_s:g}", "--runs", str(runs))
    with rig_process(*args, env=env) as proc:
        run_dir = run_dir_of(runs)
        sim = sim_info(run_dir)
        wait_for(lambda: truth(sim["control"])["current_a"] < -1e-5, 120, "plating")
        kill_hard(proc.pid)
        proc.wait(10)
        return run_dir, sim, time.monotonic()


def test_a_killed_controller_leaves_its_simulator_plating_until_rig_resume_attaches(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    run_dir, sim, _ = _killed_while_plating(tmp_path, env, grace_s=60)
    before = truth(sim["control"])
    time.sleep(1.5)  # 30 s of experiment time with no controller
    after = truth(sim["control"])
    assert alive(int(sim["pid"]))
    assert after["current_a"] < -1e-5 and after["plated_c"] > before["plated_c"]  # as a real 2450 would
    resumed = run_rig("resume", str(run_dir), env=env, timeout=240)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "simulator attached after" in resumed.stdout
    assert summary(run_dir)["state"] == "completed"
    events = read_events(run_dir / "run.sqlite")
    readback = [e for e in events if e["kind"] == "resume" and "still on" in e["message"]]
    assert readback and readback[0]["data"]["extra_charge_c"] > 0  # the unattended charge is counted
    wait_for(lambda: not alive(int(sim["pid"])), 15, "the simulator to stop after the resumed run")


def test_an_unattended_simulator_exits_after_its_grace_and_resume_then_says_so(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    run_dir, sim, t_killed = _killed_while_plating(tmp_path, env, grace_s=2)
    wait_for(lambda: not alive(int(sim["pid"])), 20, "the unattended simulator to exit")
    waited = time.monotonic() - t_killed
    assert waited >= 1.5  # it waited its grace period first
    assert "no controller attached within 2 s" in (run_dir / "sim.log").read_text()
    again: subprocess.CompletedProcess[str] = run_rig("resume", str(run_dir), env=env, timeout=60)
    said = again.stdout + again.stderr
    assert again.returncode == 1, said
    assert "Traceback" not in said and "the simulator of this --sim run is gone" in said
    assert len(again.stderr.strip().splitlines()) == 1
    assert summary(run_dir)["state"] == "failed"  # never offered for resuming again
