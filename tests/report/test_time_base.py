"""One time base everywhere (issue 14, item 13): test time from the start of the run, as the store records it.

The experiment clock starts at 0 when `rig run` starts the run (a resumed run continues it), so a run's first
sample comes after connecting and engaging the press (1679 s into the stored aborted run at 200x, most of it the
press approach). The figures, `report.md`, the BDF export and `rig show` must all give the same test time to the
same moment: the figures used to start at 0 at the first sample while the rest did not.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from rig.data.export import export_run
from rig.data.report import figure_pressure, load_run, report_run
from rig.data.store import read_events, read_samples
from tests.runs.stored import unpack
from tests.support.rig_cli import rig_env, run_rig

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def aborted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stored run aborted by the operator while plating (it has an alarm: the safe state)."""
    return unpack("aborted", tmp_path_factory.mktemp("aborted"))


def test_figures_report_export_and_show_share_the_runs_test_time(aborted: Path, tmp_path: Path) -> None:
    samples = read_samples(aborted / "run.sqlite")
    events = read_events(aborted / "run.sqlite")
    alarm = next(e for e in events if e["kind"] == "alarm")
    plate = next(e for e in events if e["kind"] == "step" and e["data"]["step"] == 1)
    assert samples[0].test_time_s > 1000  # the clock started with the run, long before the first sample

    fig = figure_pressure(load_run(aborted))
    x_h = fig.axes[0].lines[-1].get_xdata()  # the measured pressure
    assert x_h[0] * 3600 == pytest.approx(samples[0].test_time_s, abs=1e-6)
    assert x_h[-1] * 3600 == pytest.approx(samples[-1].test_time_s, abs=1e-6)
    # the figure's plate begins where the events (report.md, rig show) say it began: within one sample period
    first_plate = next(i for i, s in enumerate(samples) if s.step_count == 2)
    period = samples[first_plate].test_time_s - samples[first_plate - 1].test_time_s
    assert abs(x_h[first_plate] * 3600 - plate["test_time_s"]) <= period

    res = export_run(aborted, fmt="bdf-csv", out=tmp_path / "run.bdf.csv")
    with res.data_path.open() as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["Test Time / s"]) == pytest.approx(x_h[0] * 3600, abs=1e-6)
    assert float(rows[-1]["Test Time / s"]) == pytest.approx(x_h[-1] * 3600, abs=1e-6)

    md = report_run(aborted, out=tmp_path / "report").markdown.read_text()
    assert f"- t = {alarm['test_time_s']:.0f} s: {alarm['message']}" in md
    assert "test time from the start of the run" in md

    out = run_rig("show", str(aborted), env=rig_env(tmp_path, COLUMNS="200"))
    assert out.returncode == 0, out.stderr
    shown = next(ln for ln in out.stdout.splitlines() if alarm["message"] in ln)
    assert re.search(rf"\b{alarm['test_time_s']:.0f}\b", shown), shown
