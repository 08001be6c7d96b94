"""Issue 14 D16: a stop whose devices vanish does not hang.

`rig run` gets SIGTERM during plating, reaches the safe state (output off, recorded as aborted) and begins
releasing the pressure; the rig (the simulator process) goes away during the release. Every wait on a device is
bounded: the run gives up the release with one line saying what was left undone ("pressure not released: ..."),
records it, and exits non-zero, within seconds rather than never.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from rig.data.store import read_events
from tests.operator.rig_process import SHORT, rig_process, summary, truth
from tests.sim.sim_process import sim_process
from tests.support.rig_cli import rig_env
from tests.support.waiting import wait_for

GIVE_UP_S = 10.0  # rig.control.release: a press or load cell silent this long (wall) ends the release


def test_devices_vanishing_during_the_release_end_the_stop_with_one_line(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    runs = tmp_path / "runs"
    with sim_process(tmp_path, "--speed", "10") as sim:
        args = ("run", str(SHORT), "--config", str(sim.config_path), "--runs", str(runs))
        with rig_process(*args, env=env) as proc:
            wait_for(lambda: truth(sim.control)["current_a"] < -1e-5, 120, "plating")
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: truth(sim.control)["current_a"] == 0.0, 10, "the current off")
            time.sleep(1.0)  # the release has begun (its ramp, 60 kPa/min, takes 18 s of wall time at 10x)
            loaded = truth(sim.control)
            sim.proc.kill()  # the rig goes away mid-release
            sim.proc.wait(10)
            t_gone = time.monotonic()
            rc = proc.wait(GIVE_UP_S + 50)
            took = time.monotonic() - t_gone
            output = proc.stdout.read() if proc.stdout else ""
    assert loaded["pressure_kpa"] > 20.0  # it was still releasing when the devices went
    assert rc == 1, output
    assert took < GIVE_UP_S + 30, took  # bounded: the give-up time plus the closing of the devices
    assert "Traceback" not in output
    assert "pressure not released:" in output and "not answering" in output, output
    run_dir = next(d for d in runs.iterdir() if d.is_dir())
    done = summary(run_dir)
    assert done["state"] == "aborted" and any("pressure not released" in x for x in done["left_undone"])
    alarms = [e for e in read_events(run_dir / "run.sqlite") if e["kind"] == "alarm"]
    assert any("pressure not released" in e["message"] for e in alarms)
