"""The plan summary as plain text rows (operator units), for `rig validate` and the run display to render."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.plan import (
    C_PER_MAH,
    Plan,
    PlannedHold,
    PlannedPlate,
    PlannedPressure,
    PlannedRest,
    PlannedStep,
    PlannedStrip,
)

__all__ = ["StepRow", "describe_step", "format_duration", "step_rows", "totals"]


@dataclass(frozen=True)
class StepRow:
    """One line of the expanded-steps table."""

    number: str
    cycle: str
    kind: str
    pressure: str  # kPa
    what: str
    duration: str
    on_resume: str
    source: str


def format_duration(seconds: float) -> str:
    """`45 s`, `12 min`, `2 h 05 min`, `3 d 04 h`."""
    if seconds != seconds or seconds == float("inf"):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{seconds:.3g} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        m, r = divmod(s, 60)
        return f"{m} min" if r == 0 else f"{m} min {r:02d} s"
    if s < 86400:
        h, r = divmod(s, 3600)
        return f"{h} h {r // 60:02d} min"
    d, r = divmod(s, 86400)
    return f"{d} d {r // 3600:02d} h"


def _amps(value: float) -> str:
    magnitude = abs(value)
    sign = "-" if value < 0 else "+"
    if magnitude >= 1:
        return f"{sign}{magnitude:.4g} A"
    if magnitude >= 1e-3:
        return f"{sign}{magnitude * 1e3:.4g} mA"
    return f"{sign}{magnitude * 1e6:.4g} µA"


def _charge(coulombs: float, area_m2: float) -> str:
    mah = coulombs / C_PER_MAH
    return f"{mah:.4g} mAh ({mah / (area_m2 * 1e4):.4g} mAh/cm²)"


def _kpa(pa: float) -> str:
    return f"{pa / 1e3:.4g} kPa"


def describe_step(step: PlannedStep, area_m2: float) -> str:
    """What the step does, in operator units."""
    if isinstance(step, PlannedPressure):
        if step.ramp_rate_pa_s:
            start = _kpa(step.previous_pa) if step.previous_pa is not None else "present pressure"
            how = f"ramp {start} → {_kpa(step.pressure_pa)} at {step.ramp_rate_pa_s * 60 / 1e3:.4g} kPa/min"
        else:
            how = f"set {_kpa(step.pressure_pa)}"
        return f"{how}, settle {format_duration(step.settle_s)} within ±{_kpa(step.tolerance_pa)}"
    if isinstance(step, PlannedRest):
        return f"open circuit {format_duration(step.duration_s)}, OCV recorded"
    if isinstance(step, PlannedHold):
        return f"hold pressure {format_duration(step.duration_s)}, no current"
    if isinstance(step, PlannedPlate):
        density = abs(step.current_a) / area_m2 * 0.1  # A/m² → mA/cm²
        end = (
            f"to {_charge(step.capacity_c, area_m2)}"
            if step.capacity_c is not None
            else f"for {format_duration(step.duration_s or 0.0)} ({_charge(step.estimated_charge_c, area_m2)})"
        )
        return f"{_amps(step.current_a)} ({density:.4g} mA/cm²) {end}; stop below {step.voltage_limit_v:g} V"
    if isinstance(step, PlannedStrip):
        density = abs(step.current_a) / area_m2 * 0.1
        default = ", default" if step.capacity_limit_is_default else ""
        return (
            f"{_amps(step.current_a)} ({density:.4g} mA/cm²) to {step.cutoff_v:g} V; "
            f"limit {_charge(step.capacity_limit_c, area_m2)}{default}"
        )
    return step.kind  # pragma: no cover


def step_rows(plan: Plan) -> list[StepRow]:
    """The expanded steps, one row each."""
    rows = []
    for step in plan.steps:
        estimate = format_duration(step.estimated_duration_s)
        if isinstance(step, PlannedStrip):
            estimate = f"~{estimate}"
        rows.append(
            StepRow(
                number=str(step.number),
                cycle=str(step.cycle),
                kind=step.kind,
                pressure=f"{step.pressure_pa / 1e3:.4g}",
                what=(f"[{step.label}] " if step.label else "") + describe_step(step, plan.electrode_area_m2),
                duration=estimate,
                on_resume=step.on_resume,
                source=f"{step.source.line}:{step.source.col}",
            )
        )
    return rows


def totals(plan: Plan) -> list[tuple[str, str]]:
    """The plan's totals as (label, value) pairs."""
    area = plan.electrode_area_m2
    return [
        ("cell", f"{plan.cell_id}: {plan.electrolyte}, {plan.working_electrode}, {area * 1e4:.4g} cm²"),
        ("steps", f"{len(plan.steps)} in {plan.cycles} cycle{'s' if plan.cycles != 1 else ''}"),
        ("estimated duration", format_duration(plan.estimated_duration_s)),
        ("plated charge", _charge(plan.plated_charge_c, area)),
        ("stripped charge (estimate)", _charge(plan.estimated_strip_charge_c, area)),
        ("total charge", _charge(plan.total_charge_c, area)),
        ("Na thickness if dense", f"{plan.max_dense_thickness_m * 1e6:.3g} µm (thickest deposit between strips)"),
    ]
