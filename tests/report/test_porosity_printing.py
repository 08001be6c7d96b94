"""No porosity that cannot be true is printed (issue 14, item 14), on real stored runs.

The stored runs (tests/runs/make_stored_runs.py) are what printed the impossible values: at 1000x the library
DME 180 kPa run printed −316 % (1σ −∞ … −56 %), the short run −37 % (1σ −∞ … 52 %); the run aborted while plating
printed 100 % (1σ 100 … 100 %) from a plate-only fit with 108 mm of "creep". Every porosity in `report.md`, the
thickness figure and the campaign table must now be a number within 0–100 % or "not resolved: <why>".
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rig.data.report import figure_thickness, load_run, report_campaign, report_run
from tests.runs.stored import KINDS, unpack

pytest.importorskip("matplotlib")

# every number followed by "%" (a minus sign of either kind included), and what a non-finite value prints as
_PERCENT = re.compile(r"([−-]?\d+(?:\.\d+)?)\s*%")
_NON_FINITE = re.compile(r"nan|inf|∞", re.IGNORECASE)

WHY = {
    "completed-1000x": "run too short",
    "library-1000x": "thinner than dense Na",
    "aborted": "run aborted",
    "killed": "run killed",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stored")
    return {kind: unpack(kind, root) for kind in KINDS}


def assert_printable(text: str) -> None:
    """Every percentage in `text` is within 0–100 and nothing non-finite is printed."""
    assert not _NON_FINITE.search(text), text
    for m in _PERCENT.finditer(text):
        value = float(m.group(1).replace("−", "-"))
        assert 0.0 <= value <= 100.0, (value, text)


@pytest.mark.parametrize("kind", KINDS)
def test_report_prints_a_porosity_only_when_it_can_be_true(runs: dict[str, Path], kind: str, tmp_path: Path) -> None:
    md = report_run(runs[kind], out=tmp_path).markdown.read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("- apparent porosity:"))
    assert_printable(line)
    assert "not resolved: " in line and WHY[kind] in line, line


@pytest.mark.parametrize("kind", ["library-1000x", "aborted"])
def test_the_thickness_figure_prints_no_impossible_porosity(runs: dict[str, Path], kind: str) -> None:
    from rig.data.analysis import analyse_deposit

    run = load_run(runs[kind])
    dep = analyse_deposit(run.samples, run.plan)
    assert dep is not None
    fig = figure_thickness(run, dep, dep.uncertainty(run.drift_n_per_sqrt_s))
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts] + [t.get_text() for t in ax.get_legend().get_texts()]
    for text in texts:
        assert_printable(text)
        assert not re.search(r"φ = [−-]", text), text
    assert any("not resolved" in t for t in texts), texts


def test_campaign_table_prints_no_impossible_porosity(runs: dict[str, Path], tmp_path: Path) -> None:
    md = report_campaign([next(iter(runs.values())).parent], out=tmp_path).markdown.read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| dme |")]
    assert len(rows) == len(KINDS)
    for row in rows:
        porosity = row.split("|")[6]
        assert_printable(porosity)
        assert "not resolved: " in porosity, row
