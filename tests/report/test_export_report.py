"""BDF export and run report of a simulated run with a pause and a resume inside plating.

`rig resume RUN_DIR` (crash resume) is not on the main line yet, so the run is interrupted by an operator pause
and resume; test time has to stay monotonic across it either way, and the exporter's own repair of a backward
jump is tested on a synthetic drop.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from hardware_sim.control_port import control_request
from protocols.validate import validate_protocol
from rig.data.export import BDF_COLUMNS, PROJECT_COLUMNS, export_run, monotonic_test_time
from rig.data.report import plate_condition, report_campaign, report_run
from rig.data.store import FLAG_PAUSED, read_samples
from tests.support.rig_cli import run_rig
from tests.support.waiting import wait_for

bdf = pytest.importorskip("bdf", reason="the Battery Data Format validator (pip install batterydf)")
pd = pytest.importorskip("pandas")

SHORT = Path(__file__).parents[1] / "engine" / "short_protocol.yaml"


@pytest.fixture(scope="module")
def paused_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed simulated DME run at 180 kPa, paused and resumed while plating."""
    tmp = tmp_path_factory.mktemp("paused-run")
    env = os.environ.copy()
    env["XDG_RUNTIME_DIR"] = str(tmp / "xdg")
    (tmp / "xdg").mkdir()
    runs = tmp / "runs"
    cmd = [sys.executable, "-c", "from rig.cli.app import app; app()", "run", str(SHORT), "--sim", "--speed", "100"]
    proc = subprocess.Popen(
        [*cmd, "--runs", str(runs)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        ready = wait_for(lambda: list(runs.glob("*/sim-ready.json")), 60, "the simulator")
        control = json.loads(ready[0].read_text())["control"]

        def plating() -> bool:
            return bool(control_request(control, {"cmd": "state"})["state"]["current_a"] < -1e-4)

        wait_for(plating, 120, "plating")
        assert json.loads(run_rig("pause", env=env).stdout)["state"] == "paused"
        time.sleep(0.3)  # 30 s of experiment time paused
        assert json.loads(run_rig("resume", env=env).stdout)["state"] == "running"
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out
    (run_dir,) = [d for d in runs.iterdir() if d.is_dir()]
    return run_dir


def _validate(path: Path) -> dict[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rep: dict[str, Any] = bdf.validate(path)
    rep["warnings"] = [str(w.message) for w in caught]
    return rep


@pytest.mark.parametrize("fmt", ["bdf-csv", "bdf-parquet"])
def test_export_validates_with_the_bdf_validator(paused_run: Path, tmp_path: Path, fmt: str) -> None:
    res = export_run(paused_run, fmt=fmt, out=tmp_path / f"run{'.bdf.csv' if fmt == 'bdf-csv' else '.bdf.parquet'}")
    rep = _validate(res.data_path)
    assert rep["ok"], rep
    assert rep["missing"] == []
    assert rep["time_stats"]["present"] and rep["time_stats"]["violations"] == 0, rep["time_stats"]
    assert not any("Non-monotonic" in w for w in rep["warnings"])
    assert rep["extras"] == list(PROJECT_COLUMNS)  # only our own columns are outside the BDF vocabulary
    df = bdf.io.load(res.data_path)
    assert list(df.columns) == [*BDF_COLUMNS, *PROJECT_COLUMNS]
    assert len(df) == res.rows == len(read_samples(paused_run / "run.sqlite"))
    t = df["Test Time / s"].to_numpy()
    assert (t[1:] >= t[:-1]).all()
    # the pause is in the data: flagged rows, no current while paused, and time runs through it
    paused = df[(df["Flags / 1"].astype(int) & FLAG_PAUSED) != 0]
    assert len(paused) > 0 and (paused["Current / A"].abs() < 1e-12).all()
    plating = df[df["Current / A"] < -1e-4]
    held = plating["Applied Pressure / Pa"].dropna()  # a stale load-cell reading is recorded as no pressure
    assert len(held) > 0.9 * len(plating) and held.between(175e3, 185e3).all()
    assert plating["Cycle Count / 1"].eq(1).all()
    assert df["Deposit Thickness / um"].notna().any()  # the live estimate made it into the samples


def test_export_metadata_sidecar(paused_run: Path, tmp_path: Path) -> None:
    res = export_run(paused_run, fmt="bdf-csv", out=tmp_path / "run.bdf.csv")
    assert res.metadata_path.name == "run.bdf.csv.metadata.json"  # where batterydf looks for it
    meta = json.loads(res.metadata_path.read_text())
    assert "short DME plate/strip" in meta["protocol"]["text"] and len(meta["protocol"]["sha256"]) == 64
    assert meta["cell"]["electrolyte"] == "dme" and meta["cell"]["diameter"] == "12 mm"
    assert meta["rig"]["config"]["rig"]["name"] and "2450" in meta["rig"]["potentiostat"]
    assert meta["software"]["name"] == "rig" and meta["software"]["version"]
    assert meta["run"]["state"] == "completed" and meta["run"]["simulated"] is True
    messages = [e["message"] for e in meta["run"]["events"]]
    assert any("running -> paused" in m for m in messages) and any("paused -> running" in m for m in messages)
    assert meta["test_time"]["repairs"] == []
    assert set(meta["columns"]["project"]) == set(PROJECT_COLUMNS)


def test_a_backward_jump_in_test_time_is_closed_and_recorded() -> None:
    times = [0.0, 1.0, 2.0, 3.0, 0.5, 1.5, 2.5]  # a resume that restarted the clock
    fixed, repairs = monotonic_test_time(times)
    assert fixed == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert len(repairs) == 1 and repairs[0]["row"] == 4
    cols = {"Voltage / V": [0.0] * 7, "Current / A": [0.0] * 7}
    # the validator sees the raw drop, and none once repaired
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = bdf.validate(pd.DataFrame({"Test Time / s": times, **cols}))
        ok = bdf.validate(pd.DataFrame({"Test Time / s": fixed, **cols}))
    assert raw["time_stats"]["violations"] == 1
    assert ok["time_stats"]["violations"] == 0


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_report_of_the_run(paused_run: Path, tmp_path: Path) -> None:
    res = report_run(paused_run, out=tmp_path / "report")
    names = sorted(p.name for p in res.figures)
    assert names == ["ce.png", "pressure.png", "thickness.png", "voltage_capacity.png"]
    for fig in res.figures:
        w, h = _png_size(fig)
        assert 500 < w < 2500 and 300 < h < 2000, (fig.name, w, h)
        assert fig.stat().st_size > 15_000  # a drawn figure, not an empty canvas
    md = res.markdown.read_text()
    assert "| cycle | plated / mAh cm⁻² | stripped / mAh cm⁻² | CE / % |" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| 1 |"))
    plated, stripped, ce = (float(c) for c in row.strip("|").split("|")[1:4])
    assert plated == pytest.approx(0.05, rel=0.02)
    assert ce == pytest.approx(100 * stripped / plated, abs=0.2)  # the table's charges are rounded to 1e-4
    summary = json.loads((paused_run / "summary.json").read_text())
    assert ce == pytest.approx(100 * summary["ice"], abs=0.01)
    assert "running -> paused" in md and "paused -> running" in md
    assert "apparent porosity" in md
    for fig in names:
        assert f"]({fig})" in md


def test_cli_export_and_report(paused_run: Path, tmp_path: Path) -> None:
    env = os.environ.copy()
    parquet = str(tmp_path / "x.bdf.parquet")
    out = run_rig("export", str(paused_run), "--format", "bdf-parquet", "--out", parquet, env=env)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "x.bdf.parquet").exists() and (tmp_path / "x.bdf.parquet.metadata.json").exists()
    bad = run_rig("export", str(tmp_path), env=env)
    assert bad.returncode == 2 and "no run.sqlite" in bad.stderr
    rep = run_rig("report", str(paused_run), "--out", str(tmp_path / "rep"), env=env)
    assert rep.returncode == 0, rep.stderr
    assert (tmp_path / "rep" / "report.md").exists()
    camp = run_rig("report", "--campaign", str(paused_run.parent), "--out", str(tmp_path / "camp"), env=env)
    assert camp.returncode == 0, camp.stderr
    assert (tmp_path / "camp" / "ice_vs_pressure.png").exists()


def test_campaign_report(paused_run: Path, tmp_path: Path) -> None:
    res = report_campaign([paused_run.parent], out=tmp_path)
    (fig,) = res.figures
    w, h = _png_size(fig)
    assert w > 500 and h > 300 and fig.stat().st_size > 15_000
    md = res.markdown.read_text()
    assert "the simulator's model" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| dme | 180 |"))
    summary = json.loads((paused_run / "summary.json").read_text())
    assert f"{100 * summary['ice']:.2f}" in row and "| 88.2 |" in row  # the paper's optimum beside it
    plan = validate_protocol((paused_run / "protocol.yaml").read_text(), "p.yaml")
    assert f"| {plate_condition(plan)} |" in row  # the run's own plating condition, not a fixed caption


def test_plate_condition_states_the_runs_own_density_and_capacity() -> None:
    text = (Path(__file__).parents[1] / "engine" / "short_protocol.yaml").read_text()
    assert plate_condition(validate_protocol(text, "short.yaml")) == "0.5 mA/cm², 0.05 mAh/cm²"
    lib = Path(__file__).parents[2] / "protocols" / "library" / "dme_180kpa_plate_strip.yaml"
    assert plate_condition(validate_protocol(lib.read_text(), lib.name)) == "0.5 mA/cm², 1 mAh/cm²"
