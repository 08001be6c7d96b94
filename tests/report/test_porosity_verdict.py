"""The one porosity formatter (`rig.data.analysis.porosity_verdict`): a value within 0–100 % or "not resolved: why".

Each case is built from a fit and a drift interval of the kind the stored runs produced (tests/runs/stored/),
so every branch of the verdict is exercised with its own numbers; the stored runs themselves are in
test_porosity_printing.py.
"""

from __future__ import annotations

import math

import pytest

from rig.data.analysis import MIN_POSITION_SAMPLES, DepositAnalysis, porosity_verdict
from rig.data.porosity import NA_DENSE_UM_PER_MAH_CM2 as DENSE
from rig.data.porosity import DepositFit, DriftUncertainty, ThicknessPoint
from tests.report.test_porosity_printing import assert_printable


def _dep(s: float, *, q: float = 1.0, n: int = 500, rms: float = 0.4, stripped: bool = True) -> DepositAnalysis:
    fit = DepositFit(s, 0.0, 3.0, 60.0, 0.25, 0.0, rms, min(n, 600), q)
    points = [ThicknessPoint(float(i), 0.0, q * min(i, n - i) / (n / 2)) for i in range(n)]
    return DepositAnalysis(fit, points, 180e3, 0.022, stripped)


def _unc(s: float, sigma: float) -> DriftUncertainty:
    low = 1 - DENSE / (s - sigma) if s - sigma > 0 else -math.inf
    return DriftUncertainty(sigma, low, 1 - DENSE / (s + sigma), 0.0008, 0.022, 480)


def test_a_resolved_porosity_prints_with_its_interval_clipped_to_0_100() -> None:
    v = porosity_verdict(_dep(9.0), _unc(9.0, 0.4))  # φ 1.6 %, 1σ −3 … 6 %
    assert v.resolved and v.value is not None and v.low == 0.0
    assert v.text() == "2 % (1σ 0 … 6 % from the load cell's drift)"
    v = porosity_verdict(_dep(20.0), _unc(20.0, 1.5))  # a porous deposit: φ 56 %
    assert v.text() == "56 % (1σ 52 … 59 % from the load cell's drift)"


@pytest.mark.parametrize(
    ("s", "sigma", "cause", "words"),
    [
        (5.0, 1.0, "impossible", "thinner than dense Na"),  # φ −77 %, well outside the drift
        (-6.0, 2.0, "impossible", "no growth"),  # φ not finite
        # φ 99.9 % with a narrow φ interval (φ is flat near 1), but s is only known to ±68 %: the dense deposit
        # (8.9 µm) is far inside the drift's ±10985 µm
        (16094.0, 10985.0, "too short", "within the press's ±10985 µm"),
        (14.0, 3.0, "drift", "the load cell's drift leaves 1σ"),  # φ 37 %, 1σ 15 … 48 %: in range, open
    ],
)
def test_an_impossible_or_open_porosity_says_why(s: float, sigma: float, cause: str, words: str) -> None:
    v = porosity_verdict(_dep(s), _unc(s, sigma))
    assert not v.resolved and v.cause == cause and words in v.text(), v
    assert v.text().startswith("not resolved: ")
    assert_printable(v.text())
    if cause != "drift":
        assert v.value is None


def test_a_run_that_ended_before_the_strip_is_not_resolved_whatever_the_fit_says() -> None:
    good = (_dep(20.0, stripped=False), _unc(20.0, 1.5))
    assert porosity_verdict(*good, run_state="completed").resolved  # a completed plate-only protocol: judged as is
    for state in ("aborted", "killed", "failed"):
        v = porosity_verdict(*good, run_state=state)
        assert v.cause == "unfinished" and f"run {state} before the deposit was stripped" in v.text(), v
    stripped = porosity_verdict(_dep(20.0), _unc(20.0, 1.5), run_state="aborted")  # aborted after its strip
    assert stripped.resolved


def test_too_few_samples_and_too_short_a_run_are_named() -> None:
    few = porosity_verdict(_dep(5.0, n=MIN_POSITION_SAMPLES - 1), _unc(5.0, 1.0))
    assert few.cause == "few samples" and f"{MIN_POSITION_SAMPLES - 1} over" in few.text(), few
    short = porosity_verdict(_dep(-6.0, q=0.05, rms=0.74), _unc(-6.0, 12.0))
    assert short.cause == "too short" and "0.0500 mAh/cm² makes 0.44 µm of dense Na" in short.text(), short
    assert_printable(short.text())


def test_no_estimate_says_why_and_how_the_run_ended() -> None:
    assert porosity_verdict("run too short: 0.01 mAh/cm² deposited", None).text() == (
        "not resolved: run too short: 0.01 mAh/cm² deposited"
    )
    v = porosity_verdict("no plate or strip ran at the held 180 kPa", None, run_state="aborted")
    assert v.text() == "not resolved: run aborted before a plate or strip at the held pressure"
