"""What a finished run's samples say (pure: takes samples and the plan, no I/O): capacity per step, net deposited
charge, and the deposit thickness / apparent porosity fit over the whole run (`rig.data.porosity`)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from protocols.plan import Plan, PlannedPlate, PlannedPressure, PlannedStrip
from rig.config import LoadCellConfig
from rig.data.porosity import (
    C_PER_MAH,
    NA_DENSE_UM_PER_MAH_CM2,
    DepositFit,
    DriftUncertainty,
    ThicknessPoint,
    drift_uncertainty,
    fit_deposit,
    stack_change_um,
)
from rig.data.store import FLAG_ENDED, FLAG_PAUSED, FLAG_STALE, FLAG_SUSPENDED, Sample

__all__ = [
    "MIN_POSITION_SAMPLES",
    "DepositAnalysis",
    "DepositAssessment",
    "PorosityVerdict",
    "StepTrace",
    "analyse_deposit",
    "assess_deposit",
    "find_deposit",
    "load_cell_drift",
    "net_charge_c",
    "porosity_verdict",
    "step_kinds",
    "step_traces",
]


def step_kinds(plan: Plan) -> dict[int, str]:
    """Step Count (1-based position in the plan) → step kind."""
    return {i + 1: s.kind for i, s in enumerate(plan.steps)}


def net_charge_c(samples: Sequence[Sample], kinds: dict[int, str]) -> list[float]:
    """Net charge deposited at each sample (C): plated minus stripped so far, the running step included."""
    out: list[float] = []
    done = 0.0
    prev_step: int | None = None
    prev_charge = 0.0
    for s in samples:
        if prev_step is not None and s.step_count != prev_step:
            done += _sign(kinds.get(prev_step)) * prev_charge
            prev_charge = 0.0
        prev_step = s.step_count
        prev_charge = s.charge_c if _sign(kinds.get(s.step_count)) else 0.0
        out.append(done + _sign(kinds.get(s.step_count)) * prev_charge)
    return out


def _sign(kind: str | None) -> int:
    return 1 if kind == "plate" else -1 if kind == "strip" else 0


@dataclass(frozen=True)
class StepTrace:
    """Voltage against capacity through one plate or strip step."""

    step_count: int
    kind: str
    cycle: int
    capacity_mah_cm2: list[float]
    voltage_v: list[float]


def step_traces(samples: Sequence[Sample], plan: Plan) -> list[StepTrace]:
    """One trace per plate/strip step that has readings."""
    area_cm2 = plan.electrode_area_m2 * 1e4
    kinds = step_kinds(plan)
    traces: dict[int, StepTrace] = {}
    for s in samples:
        kind = kinds.get(s.step_count)
        if kind not in ("plate", "strip") or s.voltage_v is None or s.flags & FLAG_PAUSED:
            continue
        tr = traces.setdefault(s.step_count, StepTrace(s.step_count, kind, s.cycle, [], []))
        tr.capacity_mah_cm2.append(s.charge_c / C_PER_MAH / area_cm2)
        tr.voltage_v.append(s.voltage_v)
    return [traces[k] for k in sorted(traces)]


@dataclass(frozen=True)
class DepositAnalysis:
    """The whole-run thickness fit and the points it was made from."""

    fit: DepositFit
    points: list[ThicknessPoint]
    pressure_pa: float
    stiffness_n_per_um: float  # median of the controller's estimate over the window
    stripped: bool = False  # the window holds a strip (at least a tenth of the peak charge taken back)

    def uncertainty(self, drift_n_per_sqrt_s: float) -> DriftUncertainty:
        """The porosity interval the load cell's drift leaves (`rig.data.porosity.drift_uncertainty`)."""
        return drift_uncertainty(
            self.fit, self.points, stiffness_n_per_um=self.stiffness_n_per_um, drift_n_per_sqrt_s=drift_n_per_sqrt_s
        )


def analyse_deposit(samples: Sequence[Sample], plan: Plan) -> DepositAnalysis | None:
    """Fit thickness against net charge over the run at the (first) plating pressure; None if it cannot be told
    (`find_deposit` says why)."""
    found = find_deposit(samples, plan)
    return found if isinstance(found, DepositAnalysis) else None


def find_deposit(samples: Sequence[Sample], plan: Plan) -> DepositAnalysis | str:
    """The whole-run thickness fit, or why there is none (a sentence).

    The window opens at the first reading of a step that is not a pressure step (so the approach, the ramp and
    the settling are over) with the setpoint at that pressure and the pressure within tolerance, and closes when
    the setpoint changes or the deposit is gone; stale and suspended readings are left out.
    """
    electro = [s for s in plan.steps if isinstance(s, PlannedPlate | PlannedStrip)]
    if not electro:
        return "the protocol has no plate or strip"
    p_pa = electro[0].pressure_pa
    tol_pa = 0.05 * p_pa
    for st in plan.steps:
        if isinstance(st, PlannedPressure) and abs(st.pressure_pa - p_pa) < 1e-6:
            tol_pa = max(tol_pa, st.tolerance_pa)
            break
    kinds = step_kinds(plan)
    area_cm2 = plan.electrode_area_m2 * 1e4
    q_net = net_charge_c(samples, kinds)
    ref: Sample | None = None
    points: list[ThicknessPoint] = []
    ks: list[float] = []
    q_peak = 0.0
    for s, q in zip(samples, q_net, strict=True):
        if s.position_um is None or s.force_n is None or s.pressure_pa is None or s.setpoint_pa is None:
            continue
        if s.flags & FLAG_ENDED:
            break  # after the protocol: the safe state and the pressure release say nothing of the deposit
        if s.flags & (FLAG_STALE | FLAG_SUSPENDED):
            continue
        if ref is None:
            settled = kinds.get(s.step_count, "pressure") != "pressure"
            if settled and abs(s.setpoint_pa - p_pa) < 1e-6 and abs(s.pressure_pa - p_pa) <= tol_pa:
                ref = s
            else:
                continue
        if abs(s.setpoint_pa - p_pa) > 1e-6:
            break  # the pressure changed: the window ends
        q_peak = max(q_peak, q)
        if q_peak > 0 and q <= 0.02 * q_peak:
            break  # stripped to the end: no deposit left to measure
        k = s.stiffness_n_per_um or _fallback_k(samples)
        if k is None:
            return "the run stored no stack stiffness (recorded before the controller measured it online)"
        ks.append(k)
        assert ref.position_um is not None and ref.force_n is not None
        h = stack_change_um(
            position_um=s.position_um,
            force_n=s.force_n,
            ref_position_um=ref.position_um,
            ref_force_n=ref.force_n,
            stiffness_n_per_um=k,
        )
        points.append(ThicknessPoint(s.test_time_s, h, q / C_PER_MAH / area_cm2))
    if ref is None:
        return f"no plate or strip ran at the held {p_pa / 1e3:g} kPa"
    fit = fit_deposit(points, t_load_s=ref.test_time_s)
    if fit is None:
        q_max = max((p.q_mah_cm2 for p in points), default=0.0)
        if len(points) < _FIT_MIN_POINTS:
            return f"too few position samples for the charge: {len(points)} at the held {p_pa / 1e3:g} kPa"
        return f"run too short: {_sig(q_max, 3)} mAh/cm² deposited at the held {p_pa / 1e3:g} kPa (0.02 needed)"
    q_peak_at = max(range(len(points)), key=lambda i: points[i].q_mah_cm2)
    stripped = any(p.q_mah_cm2 < 0.9 * fit.q_max_mah_cm2 for p in points[q_peak_at:])
    return DepositAnalysis(fit, points, p_pa, statistics.median(ks), stripped)


_FIT_MIN_POINTS = 8  # rig.data.porosity.fit_deposit's own minimum


def _fallback_k(samples: Sequence[Sample]) -> float | None:
    """Older runs stored no stiffness: none can be assumed."""
    return None


# ------------------------------------------------------------------------------------------ porosity verdict

#: fewer position readings than this at the held pressure cannot separate growth from creep (and drift)
MIN_POSITION_SAMPLES = 50
_RUN_ENDS = {
    "aborted": "run aborted",
    "failed": "run failed",
    "killed": "run killed",
    "running": "run still running",
    "paused": "run paused",
    "suspended": "run suspended",
}


@dataclass(frozen=True)
class PorosityVerdict:
    """What may be printed of an apparent porosity: a value within 0–1 with its 1σ interval clipped to 0–1, or
    why it is not resolved. `text()` is the one way a porosity is printed (report, figures, campaign, rig show)."""

    value: float | None  # φ, only when finite and within 0–1
    low: float | None  # the 1σ interval, clipped to 0–1 (None without a drift figure)
    high: float | None
    resolved: bool
    why: str = ""  # why it is not resolved ("" when it is)
    #: resolved, no estimate, unfinished, few samples, too short, drift (an in-range value left open), impossible
    cause: str = "resolved"

    def text(self) -> str:
        """ "12 % (1σ 8 … 15 % from the load cell's drift)", or "not resolved: <why>"."""
        if self.value is None or not self.resolved:
            return f"not resolved: {self.why}"
        if self.low is None or self.high is None:
            return _pct(self.value)
        return f"{_pct(self.value)} (1σ {100 * self.low:.0f} … {_pct(self.high)} from the load cell's drift)"

    def short(self) -> str:
        """The value alone ("12 %"), or "not resolved" (for a figure's legend)."""
        return _pct(self.value) if self.value is not None and self.resolved else "not resolved"


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.0f} %"


def _sig(x: float, digits: int = 2) -> str:
    """`x` to `digits` significant figures, never in exponent notation (2.8e+02 reads badly in a sentence)."""
    if not math.isfinite(x) or x == 0:
        return f"{x:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def _clip(v: float) -> float:
    return min(1.0, max(0.0, v)) if not math.isnan(v) else 0.0


def porosity_verdict(
    found: DepositAnalysis | str, unc: DriftUncertainty | None, *, run_state: str = "completed"
) -> PorosityVerdict:
    """Decide what may be printed of the deposit's apparent porosity (`run_state`: completed, aborted, killed, …).

    A value is printed only when it is finite and within 0–1 and its drift interval is within
    ±`RESOLVED_SIGMA_POROSITY` (rig.data.porosity). Otherwise the verdict says why, the first of: no estimate
    (`find_deposit`'s reason); the run ended before its deposit was stripped (a plate alone is a preview: growth
    and creep are nearly collinear); too few position samples; the run too short for the load path (a dense
    deposit at the peak charge is within twice the press's noise: the fit's residual or the drift's spread);
    an in-range value the drift leaves open; a thickness per charge thinner than dense Na (no porosity is below
    0). The too-short rule comes before a value is accepted: it also stops the φ ≈ 1 artefact (φ = 1 − 8.86/s is
    flat there, so a thickness per charge known only to a factor of two still gives a narrow porosity interval)."""
    ended = _RUN_ENDS.get(run_state, "" if run_state == "completed" else f"run {run_state}")
    if isinstance(found, str):
        if ended and found.startswith("no plate or strip ran"):
            why = f"{ended} before a plate or strip at the held pressure"
            return PorosityVerdict(None, None, None, False, why, "no estimate")
        return PorosityVerdict(None, None, None, False, f"{found} ({ended})" if ended else found, "no estimate")
    fit = found.fit
    s = fit.um_per_mah_cm2
    phi = fit.porosity
    in_range = math.isfinite(phi) and 0.0 <= phi <= 1.0
    sigma = unc.sigma_um_per_mah_cm2 if unc is not None else math.nan
    low = _clip(unc.porosity_low) if unc is not None else None
    high = _clip(unc.porosity_high) if unc is not None else None
    resolved = unc is not None and unc.resolved and math.isfinite(sigma)
    if ended and not found.stripped:
        why = (
            f"{ended} before the deposit was stripped: from a plate alone its growth and the stack's creep cannot "
            "be told apart"
        )
        return PorosityVerdict(None, None, None, False, why, "unfinished")
    q = fit.q_max_mah_cm2
    n = len(found.points)
    if n < MIN_POSITION_SAMPLES:
        why = f"too few position samples for the charge: {n} over {_sig(q, 3)} mAh/cm² ({MIN_POSITION_SAMPLES} needed)"
        return PorosityVerdict(None, None, None, False, why, "few samples")
    dense_um = NA_DENSE_UM_PER_MAH_CM2 * q
    noise_um = max(fit.rms_um, sigma * q if math.isfinite(sigma) else 0.0)
    if dense_um <= 2.0 * noise_um:
        why = (
            f"run too short for this load path: {_sig(q, 3)} mAh/cm² makes {_sig(dense_um)} µm of dense Na, within "
            f"the press's ±{_sig(noise_um)} µm of noise (1σ)"
        )
        return PorosityVerdict(None, None, None, False, why, "too short")
    if in_range and resolved:
        return PorosityVerdict(phi, low, high, True)
    read = f"{_sig(s, 3)} ± {_sig(sigma)} µm per mAh/cm²" if math.isfinite(sigma) else f"{_sig(s, 3)} µm per mAh/cm²"
    drift = " (1σ, the load cell's drift)" if math.isfinite(sigma) else ""
    if in_range:
        if unc is None or low is None or high is None:
            why = f"{_pct(phi)} with no drift figure to bound it"
        else:
            why = f"{_pct(phi)}, but the load cell's drift leaves 1σ {100 * low:.0f} … {_pct(high)} ({read})"
        return PorosityVerdict(phi, low, high, False, why, "drift")
    if s <= 0:
        why = f"the press read {read}{drift}: no growth, and no deposit is thinner than dense Na (8.86)"
    else:
        why = f"the press read {read}{drift}: thinner than dense Na (8.86), which no deposit can be"
    return PorosityVerdict(None, None, None, False, why, "impossible")


def load_cell_drift(meta: dict[str, str]) -> float:
    """The load cell's drift (N/√s) from a run's stored rig configuration (the default for runs without one)."""
    default = float(LoadCellConfig.model_fields["drift_n_per_sqrt_s"].default)
    try:
        value = json.loads(meta["rig_config"])["load_cell"].get("drift_n_per_sqrt_s", default)
    except (KeyError, TypeError, ValueError, AttributeError):
        return default
    return float(value) if isinstance(value, int | float) and value >= 0 else default


@dataclass(frozen=True)
class DepositAssessment:
    """The whole-run deposit fit (if any), its drift interval, and what may be printed of its porosity."""

    deposit: DepositAnalysis | None
    uncertainty: DriftUncertainty | None
    verdict: PorosityVerdict


def assess_deposit(
    samples: Sequence[Sample], plan: Plan, *, drift_n_per_sqrt_s: float, run_state: str
) -> DepositAssessment:
    """Fit, interval and verdict in one go (what the report and `rig show` print)."""
    found = find_deposit(samples, plan)
    if isinstance(found, str):
        return DepositAssessment(None, None, porosity_verdict(found, None, run_state=run_state))
    unc = found.uncertainty(drift_n_per_sqrt_s)
    return DepositAssessment(found, unc, porosity_verdict(found, unc, run_state=run_state))
