"""Issue 14 A2 and A4: one controller per rig, and operator commands that find the rig they mean.

- A second `rig run` on the same rig (the same configuration, or another name for the same devices) is refused
  with exit 2 before it opens any device, naming the holder's PID and run folder; `rig resume`, `rig check` and
  `rig safe` on the locked rig are refused the same way; the first run's operator socket still answers the first
  run. How fast a refusal is (the issue's 2 s) is measured by bench/lock_refusal.py.
- `rig pause|resume|abort|status|ack` with no --rig act on the one running rig; with several running they list
  them and send nothing; with none they say so (`abort` points to `rig safe`).
"""

from __future__ import annotations

import json
from pathlib import Path

from rig.data.store import read_events
from tests.operator.rig_process import LONG_PLATE, SHORT, rig_json, rig_process, run_dir_of, sim_info, truth
from tests.sim.sim_process import sim_process
from tests.support.rig_cli import rig_env, run_rig
from tests.support.waiting import wait_for

ACTIVE = ("running", "suspended")


def test_a_second_controller_is_refused_before_it_opens_anything_and_the_first_keeps_its_socket(
    tmp_path: Path,
) -> None:
    env = rig_env(tmp_path)
    runs = tmp_path / "runs"
    with sim_process(tmp_path, "--speed", "20") as sim:
        cfg = str(sim.config_path)
        with rig_process("run", str(LONG_PLATE), "--config", cfg, "--runs", str(runs), env=env) as first:
            wait_for(lambda: truth(sim.control)["current_a"] < -1e-5, 120, "the first run plating")
            first_dir = next(d for d in runs.iterdir() if d.is_dir())
            opened_before = truth(sim.control)["connections_accepted"]
            refusals = {}
            renamed = rig_env(tmp_path, RIG_RIG__NAME="another-name")  # other name, same devices
            for label, args, e in [
                ("run", ("run", str(SHORT), "--config", cfg, "--runs", str(tmp_path / "runs2")), env),
                ("run, renamed", ("run", str(SHORT), "--config", cfg, "--runs", str(tmp_path / "runs3")), renamed),
                ("resume", ("resume", str(first_dir)), env),
                ("check", ("check", "--config", cfg), env),
                ("safe", ("safe", "--config", cfg), env),
            ]:
                out = run_rig(*args, env=e, timeout=30)
                refusals[label] = (out.returncode, out.stdout + out.stderr)
            opened_after = truth(sim.control)["connections_accepted"]
            st = rig_json(env, "status")
            aborted = run_rig("abort", env=env)
            first.wait(120)
    # (how long a refusal takes, against the 2 s, is measured by bench/lock_refusal.py)
    for label, (rc, said) in refusals.items():
        assert rc == 2, (label, said)
        assert f"PID {first.pid}" in said and str(first_dir.resolve()) in said, (label, said)
        assert "Traceback" not in said
    assert opened_after == opened_before  # refused before any device was opened: no port, no VISA resource
    assert not (tmp_path / "runs2").exists() and not (tmp_path / "runs3").exists()  # no empty run folders
    assert st["state"] in ACTIVE and str(st["step"]).startswith("2/2 plate")  # the first run's own socket
    assert not [e for e in read_events(first_dir / "run.sqlite") if e["kind"] == "safe"]  # rig safe did nothing
    assert aborted.returncode == 0 and json.loads(aborted.stdout)["state"] == "aborted"


def test_operator_commands_find_the_one_rig_list_several_and_say_when_none_runs(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    none = run_rig("status", env=env)
    assert none.returncode == 1 and "no rig controller is running" in none.stderr
    no_abort = run_rig("abort", env=env)
    assert no_abort.returncode == 1 and "rig safe --config" in no_abort.stderr
    runs_a, runs_b = tmp_path / "a", tmp_path / "b"
    args = ("--sim", "--speed", "20")
    with rig_process("run", str(LONG_PLATE), *args, "--runs", str(runs_a), env=env) as a:
        dir_a = run_dir_of(runs_a)
        wait_for(lambda: truth(sim_info(dir_a)["control"])["current_a"] < -1e-5, 120, "run a plating")
        one = rig_json(env, "status")  # no --rig: the one rig running
        assert one["rig"] == "sim" and one["state"] in ACTIVE
        with rig_process("run", str(LONG_PLATE), *args, "--runs", str(runs_b), env=env) as b:
            dir_b = run_dir_of(runs_b)
            wait_for(lambda: truth(sim_info(dir_b)["control"])["current_a"] < -1e-5, 120, "run b plating")
            several = run_rig("pause", env=env)
            after = {rig: rig_json(env, "status", "--rig", rig) for rig in ("sim", "sim-2")}
            for rig in ("sim", "sim-2"):
                assert run_rig("abort", "--rig", rig, env=env).returncode == 0
            a.wait(120)
            b.wait(120)
    assert several.returncode == 2
    assert "2 rigs are running: sim, sim-2" in several.stderr and "nothing was sent" in several.stderr
    for rig, st in after.items():  # neither was paused (a stale-load-cell suspension under load may come and go)
        assert st["rig"] == rig and st["state"] in ACTIVE and "operator" not in st["holds"], st  # type: ignore[operator]

