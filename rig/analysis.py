"""What a finished run's samples say (pure: takes samples and the plan, no I/O): capacity per step, net deposited
charge, and the deposit thickness / apparent porosity fit over the whole run (`rig.porosity`)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from protocols.plan import Plan, PlannedPlate, PlannedPressure, PlannedStrip
from rig.porosity import (
    C_PER_MAH,
    DepositFit,
    DriftUncertainty,
    ThicknessPoint,
    drift_uncertainty,
    fit_deposit,
    stack_change_um,
)
from rig.store import FLAG_PAUSED, FLAG_STALE, FLAG_SUSPENDED, Sample

__all__ = ["DepositAnalysis", "StepTrace", "analyse_deposit", "net_charge_c", "step_kinds", "step_traces"]


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

    def uncertainty(self, drift_n_per_sqrt_s: float) -> DriftUncertainty:
        """The porosity interval the load cell's drift leaves (`rig.porosity.drift_uncertainty`)."""
        return drift_uncertainty(
            self.fit, self.points, stiffness_n_per_um=self.stiffness_n_per_um, drift_n_per_sqrt_s=drift_n_per_sqrt_s
        )


def analyse_deposit(samples: Sequence[Sample], plan: Plan) -> DepositAnalysis | None:
    """Fit thickness against net charge over the run at the (first) plating pressure; None if it cannot be told.

    The window opens at the first reading of a step that is not a pressure step (so the approach, the ramp and
    the settling are over) with the setpoint at that pressure and the pressure within tolerance, and closes when
    the setpoint changes or the deposit is gone; stale and suspended readings are left out.
    """
    electro = [s for s in plan.steps if isinstance(s, PlannedPlate | PlannedStrip)]
    if not electro:
        return None
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
            return None
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
        return None
    fit = fit_deposit(points, t_load_s=ref.test_time_s)
    if fit is None:
        return None
    return DepositAnalysis(fit, points, p_pa, statistics.median(ks))


def _fallback_k(samples: Sequence[Sample]) -> float | None:
    """Older runs stored no stiffness: none can be assumed."""
    return None
