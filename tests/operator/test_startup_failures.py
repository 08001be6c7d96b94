"""Issue 14 A5 and B9: a rig that cannot start says so in one line, and `rig check` and `rig run` agree.

- A press drive whose status register has the fault bit set with no alarm code (0x0003) fails `rig check` and is
  refused by `rig run` through the same verification (`LeadshinePR.verify_safe`).
- A wrong serial port, or a device that refuses its start-up check, ends `rig run` with one line naming the
  device (or port) and what to check, exit 1, no traceback, the run folder marked failed (summary.json), and with
  --headless an `error` record in the JSON log.
"""

from __future__ import annotations

import json
from pathlib import Path

from hardware_sim.control_port import control_request
from tests.operator.rig_process import SHORT, summary
from tests.sim.sim_process import sim_process
from tests.support.rig_cli import rig_env, run_rig


def _only_run_dir(runs: Path) -> Path:
    dirs = [d for d in runs.iterdir() if d.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_check_and_run_both_refuse_a_drive_with_its_fault_bit_set(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    runs = tmp_path / "runs"
    with sim_process(tmp_path, "--speed", "20") as sim:
        control_request(sim.control, {"cmd": "fault", "device": "stepper", "set": {"status_fault": True}})
        check = run_rig("check", "--config", str(sim.config_path), env=env, timeout=60)
        run = run_rig("run", str(SHORT), "--config", str(sim.config_path), "--runs", str(runs), env=env, timeout=60)
    checked = " ".join(check.stdout.split())  # rich wraps long lines
    assert check.returncode == 1, check.stdout
    assert "FAILED press" in checked and "fault bit set with no alarm code" in checked
    said = run.stdout + run.stderr
    assert run.returncode == 1, said
    assert "Traceback" not in said
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("rig run: press:") and "fault bit set with no alarm code" in line
    assert "[buses.rs485] port" in line  # what to check, and where
    done = summary(_only_run_dir(runs))
    assert done["state"] == "failed" and "fault bit set" in done["reason"]


def test_a_wrong_serial_port_is_one_line_and_the_run_is_marked_failed(tmp_path: Path) -> None:
    env = rig_env(tmp_path, RIG_BUSES__RS485__PORT="/dev/ttyNOPE14")
    runs = tmp_path / "runs"
    with sim_process(tmp_path, "--speed", "20") as sim:
        args = ("run", str(SHORT), "--config", str(sim.config_path), "--runs", str(runs), "--headless")
        run = run_rig(*args, env=env, timeout=60)
    lines = [ln for ln in run.stderr.splitlines() if not ln.startswith("{")]  # the JSON log also goes to stderr
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    (line,) = lines
    assert "/dev/ttyNOPE14" in line and "[buses.rs485] port = '/dev/ttyNOPE14'" in line, line
    run_dir = _only_run_dir(runs)
    assert summary(run_dir)["state"] == "failed"
    records = [json.loads(x) for x in (run_dir / "run.log.jsonl").read_text().splitlines()]
    errors = [r for r in records if r["type"] == "error"]
    assert errors and "/dev/ttyNOPE14" in errors[0]["message"]


def test_a_potentiostat_that_refuses_its_safety_check_is_one_line(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    runs = tmp_path / "runs"
    with sim_process(tmp_path, "--speed", "20") as sim:
        control_request(sim.control, {"cmd": "fault", "device": "potentiostat", "set": {"scpi_error": -222}})
        run = run_rig("run", str(SHORT), "--config", str(sim.config_path), "--runs", str(runs), env=env, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("rig run: potentiostat:") and "[potentiostat] resource" in line, line
    assert summary(_only_run_dir(runs))["state"] == "failed"
