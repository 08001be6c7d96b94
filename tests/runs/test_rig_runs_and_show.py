"""`rig runs` and `rig show RUN` (issue 14, item 12) on stored real runs, broken folders and a live run."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from hardware_sim.control_port import control_request
from rig.data.store import read_events, read_samples
from tests.runs.stored import KINDS, unpack
from tests.support.rig_cli import RIG, rig_env, run_rig
from tests.support.waiting import wait_for

SHORT = Path(__file__).parents[1] / "engine" / "short_protocol.yaml"
STATES = {"completed-1000x": "completed", "library-1000x": "completed", "aborted": "aborted", "killed": "killed"}


@pytest.fixture
def lab(tmp_path: Path) -> tuple[dict[str, str], Path, dict[str, Path]]:
    """The test's environment, its default runs folder holding the stored runs, and the runs by kind."""
    env = rig_env(tmp_path, COLUMNS="250")
    root = Path(env["XDG_DATA_HOME"]) / "rig" / "runs"
    return env, root, {kind: unpack(kind, root) for kind in KINDS}


def _json(out: subprocess.CompletedProcess[str]) -> Any:
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def test_rig_runs_lists_the_default_folder_newest_first(lab: tuple[dict[str, str], Path, dict[str, Path]]) -> None:
    env, _, runs = lab
    listed = _json(run_rig("runs", "--json", env=env))
    by_folder = {r["folder"]: r for r in listed}
    assert set(by_folder) == {str(p) for p in runs.values()}
    for kind, path in runs.items():
        row = by_folder[str(path)]
        assert row["state"] == STATES[kind], row
        assert row["rig"] == "sim" and row["protocol"] and row["problem"] is None, row
        summary = path / "summary.json"
        ice = json.loads(summary.read_text())["ice"] if summary.exists() else None
        assert row["ice"] == ice
    starts = [r["started_unix"] for r in listed]
    assert starts == sorted(starts, reverse=True)
    killed = by_folder[str(runs["killed"])]  # a --sim run whose simulator is gone: nothing left to resume on
    assert killed["resumable"] is False and "its simulator is gone" in killed["reason"], killed
    table = run_rig("runs", env=env)
    assert table.returncode == 0, table.stderr
    for kind, path in runs.items():
        line = next(ln for ln in table.stdout.splitlines() if path.name in ln)
        assert STATES[kind] in line, line
        if kind == "completed-1000x":
            assert f"{100 * by_folder[str(path)]['ice']:.2f}" in line, line


def test_broken_folders_are_listed_with_their_problem(lab: tuple[dict[str, str], Path, dict[str, Path]]) -> None:
    env, root, runs = lab
    corrupt = root / "20261206-040000-corrupt"
    corrupt.mkdir()
    (corrupt / "protocol.yaml").write_text((SHORT).read_text())
    (corrupt / "run.sqlite").write_bytes(b"not a database at all" * 100)
    half = root / "20261206-040100-half-written"
    half.mkdir()
    (half / "protocol.yaml").write_text("name: [unclosed")
    old = time.time() - 3600
    os.utime(half, (old, old))
    truncated = unpack("completed-1000x", root / "truncated-parent")
    db = truncated / "run.sqlite"
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    listed = _json(run_rig("runs", "--runs", str(root), "--json", env=env))
    by_folder = {r["folder"]: r for r in listed}
    assert len(listed) == len(runs) + 3
    assert "database" in by_folder[str(corrupt)]["problem"], by_folder[str(corrupt)]
    assert "no run.sqlite" in by_folder[str(half)]["problem"], by_folder[str(half)]
    assert by_folder[str(truncated)]["problem"], by_folder[str(truncated)]
    table = run_rig("runs", "--runs", str(root), env=env)
    assert table.returncode == 0 and corrupt.name in table.stdout and half.name in table.stdout, table.stderr


def test_rig_show_prints_summary_steps_events_and_the_last_samples(
    lab: tuple[dict[str, str], Path, dict[str, Path]],
) -> None:
    env, _, runs = lab
    run_dir = runs["aborted"]
    out = run_rig("show", run_dir.name, "--samples", "3", env=env)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "aborted" in text and "operator abort" in text
    assert "short DME plate/strip" in text
    events = read_events(run_dir / "run.sqlite")
    plate_end = next(e for e in events if e["kind"] == "step_end")
    step_line = next(ln for ln in text.splitlines() if "plate" in ln and "interrupted" in ln)
    assert f"{plate_end['data']['charge_c'] / 3.6:.4f}" in step_line, step_line
    alarm = next(e for e in events if e["kind"] == "alarm")
    assert any(alarm["message"] in ln and f"{alarm['test_time_s']:.0f}" in ln for ln in text.splitlines())
    samples = read_samples(run_dir / "run.sqlite")
    rows = [ln for ln in text.splitlines() if any(f"{s.test_time_s:.1f}" in ln for s in samples[-3:])]
    assert len(rows) == 3, text
    assert not any(f"{s.test_time_s:.1f}" in text for s in samples[-6:-3])
    assert "porosity" in text and "not resolved: run aborted" in text


def test_rig_show_finds_a_run_by_path_or_unique_prefix_and_says_when_it_cannot(
    lab: tuple[dict[str, str], Path, dict[str, Path]],
) -> None:
    env, _, runs = lab
    killed = runs["killed"]
    by_path = run_rig("show", str(killed), env=env)
    assert by_path.returncode == 0 and "killed" in by_path.stdout and "rig resume" in by_path.stdout, by_path.stderr
    by_prefix = run_rig("show", killed.name[:-5], env=env)
    assert by_prefix.returncode == 0 and str(killed) in by_prefix.stdout, by_prefix.stderr
    names = [p.name for p in runs.values()]
    common = names[0][: next(i for i in range(len(names[0])) if len({n[: i + 1] for n in names}) > 1)]
    ambiguous = run_rig("show", common, env=env)
    assert ambiguous.returncode == 2 and "ambiguous" in ambiguous.stderr, ambiguous.stderr
    missing = run_rig("show", "no-such-run", env=env)
    assert missing.returncode == 2 and missing.stdout == "", missing.stdout
    assert len(missing.stderr.strip().splitlines()) == 1 and "no-such-run" in missing.stderr, missing.stderr


def test_export_and_report_take_a_run_by_name_from_the_runs_folder(
    lab: tuple[dict[str, str], Path, dict[str, Path]], tmp_path: Path
) -> None:
    env, _, runs = lab
    name = runs["aborted"].name
    exported = run_rig("export", name, "--out", str(tmp_path / "x.bdf.csv"), env=env)
    assert exported.returncode == 0 and (tmp_path / "x.bdf.csv").exists(), exported.stderr
    reported = run_rig("report", name[:-3], "--out", str(tmp_path / "rep"), env=env)
    assert reported.returncode == 0 and (tmp_path / "rep" / "report.md").exists(), reported.stderr
    missing = run_rig("report", "no-such-run", env=env)
    assert missing.returncode == 2 and "no-such-run" in missing.stderr, missing.stderr


def test_a_live_run_is_listed_as_running_and_then_as_it_ended(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    root = tmp_path / "runs"
    sock = tmp_path / "op.sock"
    cmd = [*RIG, "run", str(SHORT), "--sim", "--speed", "200", "--runs", str(root), "--socket", str(sock)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        ready = wait_for(lambda: list(root.glob("*/sim-ready.json")), 60, "the simulator")
        control = json.loads(ready[0].read_text())["control"]
        wait_for(lambda: control_request(control, {"cmd": "state"})["state"]["current_a"] < -1e-5, 120, "plating")
        (row,) = _json(run_rig("runs", "--runs", str(root), "--json", env=env))
        assert row["state"] == "running", row
        assert run_rig("abort", "--socket", str(sock), env=env).returncode == 0
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    (row,) = _json(run_rig("runs", "--runs", str(root), "--json", env=env))
    assert row["state"] == "aborted" and row["reason"] == "operator abort", row
