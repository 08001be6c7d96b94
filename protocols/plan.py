"""The plan: a protocol expanded into a flat list of concrete steps in SI units, with estimates. Pure data.

Sign convention (ADR 0012, the same as `drivers/interfaces.py`): operators write positive magnitudes for plate and
strip currents and limits. In the plan, current is signed at the working electrode (Al): **plating is negative**
(cathodic, Na⁺ + e⁻ → Na on Al), **stripping is positive** (anodic). Voltage is working minus counter electrode
(Al − Na): a plate's `voltage_limit_v` is negative (plating stops if V falls below it), a strip's `cutoff_v` is
positive (stripping ends when V rises to it). `capacity_c` and charges are positive magnitudes in coulombs.

Indices (named after the Battery Data Format columns): `number` is the 1-based position in the expanded plan
(`Step Count`), `step_index` the 1-based position of the step as written, repeats expanded in place but counted
once (`Step Index`), `cycle` the 1-based plate/strip cycle (`Cycle Count`: a plate that follows a strip starts a
new cycle), `iteration` the 1-based pass of each enclosing `repeat`, outermost first.

Estimates: a plate lasts capacity / current. A strip ends at its cut-off, which cannot be known in advance: it is
estimated to return `assumed_strip_efficiency` (85 %) of the charge plated since the previous strip, capped by its
capacity limit. A pressure step is estimated as its ramp time plus its settle time. Dense Na is 8.86 µm per mAh/cm².
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Literal, TypedDict

from protocols.errors import ProtocolError, ProtocolIssue, SourceMark
from protocols.model import (
    HoldStep,
    OnResume,
    PlateStep,
    PressureStep,
    Protocol,
    RepeatStep,
    RestStep,
    Step,
    StripStep,
)

__all__ = [
    "ASSUMED_STRIP_EFFICIENCY",
    "C_PER_MAH",
    "DEFAULT_STRIP_LIMIT_FACTOR",
    "MAX_PLAN_STEPS",
    "NA_DENSE_M_PER_C_M2",
    "NA_DENSE_UM_PER_MAH_CM2",
    "Plan",
    "PlannedHold",
    "PlannedPlate",
    "PlannedPressure",
    "PlannedRest",
    "PlannedStep",
    "PlannedStrip",
    "StepKind",
    "build_plan",
]

StepKind = Literal["pressure", "rest", "plate", "strip", "hold"]

C_PER_MAH = 3.6
NA_DENSE_UM_PER_MAH_CM2 = 8.86
#: Dense Na thickness per areal charge, in m per (C/m²): 8.86 µm per mAh/cm² = 8.86e-6 m per 36 000 C/m².
NA_DENSE_M_PER_C_M2 = NA_DENSE_UM_PER_MAH_CM2 * 1e-6 / (C_PER_MAH / 1e-4)
ASSUMED_STRIP_EFFICIENCY = 0.85
#: A strip without `capacity_limit` may pass at most this multiple of the charge plated since the previous strip.
DEFAULT_STRIP_LIMIT_FACTOR = 1.2
MAX_PLAN_STEPS = 100_000


@dataclass(frozen=True, kw_only=True)
class PlannedStep:
    """One concrete step. `pressure_pa` is the setpoint held during it (for a pressure step, its target)."""

    kind: ClassVar[StepKind]
    number: int
    step_index: int
    cycle: int
    iteration: tuple[int, ...]
    label: str
    source: SourceMark
    pressure_pa: float
    on_resume: OnResume
    estimated_duration_s: float


@dataclass(frozen=True, kw_only=True)
class PlannedPressure(PlannedStep):
    """Set (`ramp_rate_pa_s` None) or ramp to `pressure_pa`; done once within `tolerance_pa` for `settle_s`."""

    kind: ClassVar[StepKind] = "pressure"
    previous_pa: float | None
    ramp_rate_pa_s: float | None
    tolerance_pa: float
    settle_s: float
    timeout_s: float | None


@dataclass(frozen=True, kw_only=True)
class PlannedRest(PlannedStep):
    """Open circuit for `duration_s`, recording the OCV."""

    kind: ClassVar[StepKind] = "rest"
    duration_s: float


@dataclass(frozen=True, kw_only=True)
class PlannedHold(PlannedStep):
    """Output off, pressure held, for `duration_s`."""

    kind: ClassVar[StepKind] = "hold"
    duration_s: float


@dataclass(frozen=True, kw_only=True)
class PlannedPlate(PlannedStep):
    """Plate at `current_a` (< 0) to `capacity_c` or for `duration_s` (one is None); stop if V < `voltage_limit_v`."""

    kind: ClassVar[StepKind] = "plate"
    current_a: float
    capacity_c: float | None
    duration_s: float | None
    voltage_limit_v: float
    estimated_charge_c: float
    dense_thickness_m: float


@dataclass(frozen=True, kw_only=True)
class PlannedStrip(PlannedStep):
    """Strip at `current_a` (> 0) until V ≥ `cutoff_v`; stop at `capacity_limit_c` whatever the voltage."""

    kind: ClassVar[StepKind] = "strip"
    current_a: float
    cutoff_v: float
    capacity_limit_c: float
    capacity_limit_is_default: bool
    estimated_charge_c: float


@dataclass(frozen=True)
class Plan:
    """A validated protocol, expanded: header, cell, the concrete steps and the estimates.

    `max_dense_thickness_m` is the thickest Na deposit plated between two strips, if dense (8.86 µm per mAh/cm²);
    what earlier strips left behind is not counted.
    """

    name: str
    description: str
    operator: str
    source_file: str
    cell_id: str
    electrolyte: str
    working_electrode: str
    counter_electrode: str
    electrode_area_m2: float
    steps: tuple[PlannedStep, ...]
    assumed_strip_efficiency: float
    max_dense_thickness_m: float
    notes: tuple[str, ...] = field(default=())

    @property
    def estimated_duration_s(self) -> float:
        """The sum of the steps' estimated durations."""
        return math.fsum(s.estimated_duration_s for s in self.steps)

    @property
    def plated_charge_c(self) -> float:
        """Charge all plate steps pass (planned, not estimated)."""
        return math.fsum(s.estimated_charge_c for s in self.steps if isinstance(s, PlannedPlate))

    @property
    def estimated_strip_charge_c(self) -> float:
        """Charge all strip steps are estimated to pass."""
        return math.fsum(s.estimated_charge_c for s in self.steps if isinstance(s, PlannedStrip))

    @property
    def total_charge_c(self) -> float:
        """All charge passed through the cell, plated plus (estimated) stripped."""
        return self.plated_charge_c + self.estimated_strip_charge_c

    @property
    def cycles(self) -> int:
        """The number of plate/strip cycles (0 when nothing is plated or stripped)."""
        return max((s.cycle for s in self.steps if isinstance(s, (PlannedPlate, PlannedStrip))), default=0)


def _div(a: float, b: float) -> float:
    return a / b if b > 0 else math.inf


def expanded_length(steps: tuple[Step, ...], cap: int = MAX_PLAN_STEPS) -> int:
    """How many concrete steps `steps` expand to, or `cap + 1` as soon as that is exceeded."""
    total = 0
    for step in steps:
        if isinstance(step, RepeatStep):
            body = expanded_length(step.steps, cap)
            total += step.count * body if body <= cap else cap + 1
        else:
            total += 1
        if total > cap:
            return cap + 1
    return total


class _Common(TypedDict):
    number: int
    step_index: int
    iteration: tuple[int, ...]
    label: str
    source: SourceMark
    on_resume: OnResume


class _Builder:
    def __init__(self, protocol: Protocol, efficiency: float) -> None:
        self.protocol = protocol
        self.area_m2 = protocol.cell.electrode_area_m2
        self.efficiency = efficiency
        self.steps: list[PlannedStep] = []
        self.issues: list[ProtocolIssue] = []
        self.index: dict[int, int] = {}
        self.setpoint_pa: float | None = None
        self.cycle = 1
        self.stripped_in_cycle = False
        self.plated_since_strip_c = 0.0
        self.max_deposit_c = 0.0
        self._number_written(protocol.steps, iter(range(1, 10**9)))

    def _number_written(self, steps: tuple[Step, ...], counter: Iterator[int]) -> None:
        for step in steps:
            if isinstance(step, RepeatStep):
                self._number_written(step.steps, counter)
            else:
                self.index[id(step)] = next(counter)

    def walk(self, steps: tuple[Step, ...], iteration: tuple[int, ...]) -> None:
        for step in steps:
            if isinstance(step, RepeatStep):
                for n in range(1, step.count + 1):
                    self.walk(step.steps, (*iteration, n))
            else:
                self.add(step, iteration)

    def _pressure(self, step: RestStep | HoldStep | PlateStep | StripStep) -> float | None:
        if step.pressure_pa is not None:
            self.setpoint_pa = step.pressure_pa
        if self.setpoint_pa is None:
            self.issues.append(
                ProtocolIssue(
                    step.source,
                    f"no pressure is set before this `{step.kind}` step: start with a `pressure` step "
                    "or give the step its own `pressure`",
                )
            )
        return self.setpoint_pa

    def add(self, step: PressureStep | RestStep | PlateStep | StripStep | HoldStep, iteration: tuple[int, ...]) -> None:
        common = _Common(
            number=len(self.steps) + 1,
            step_index=self.index[id(step)],
            iteration=iteration,
            label=step.label,
            source=step.source,
            on_resume=step.on_resume,
        )
        if isinstance(step, PressureStep):
            previous = self.setpoint_pa
            self.setpoint_pa = step.target_pa
            ramp_s = _div(abs(step.target_pa - (previous or 0.0)), step.rate_pa_s) if step.rate_pa_s else 0.0
            self.steps.append(
                PlannedPressure(
                    **common,
                    cycle=self.cycle,
                    pressure_pa=step.target_pa,
                    estimated_duration_s=ramp_s + step.settle_s,
                    previous_pa=previous,
                    ramp_rate_pa_s=step.rate_pa_s,
                    tolerance_pa=step.tolerance_pa,
                    settle_s=step.settle_s,
                    timeout_s=step.timeout_s,
                )
            )
            return
        pressure = self._pressure(step)
        if isinstance(step, (RestStep, HoldStep)):
            cls = PlannedRest if isinstance(step, RestStep) else PlannedHold
            if pressure is not None:
                self.steps.append(
                    cls(
                        **common,
                        cycle=self.cycle,
                        pressure_pa=pressure,
                        estimated_duration_s=step.duration_s,
                        duration_s=step.duration_s,
                    )
                )
            return
        current = step.magnitude_a(self.area_m2)
        if isinstance(step, PlateStep):
            if self.stripped_in_cycle:
                self.cycle += 1
                self.stripped_in_cycle = False
            if step.capacity is not None:
                charge = step.capacity.coulombs(self.area_m2)
                duration = _div(charge, current)
            else:
                assert step.duration_s is not None
                duration = step.duration_s
                charge = current * duration
            self.plated_since_strip_c += charge
            self.max_deposit_c = max(self.max_deposit_c, self.plated_since_strip_c)
            if pressure is not None:
                self.steps.append(
                    PlannedPlate(
                        **common,
                        cycle=self.cycle,
                        pressure_pa=pressure,
                        estimated_duration_s=duration,
                        current_a=-current,
                        capacity_c=charge if step.capacity is not None else None,
                        duration_s=step.duration_s,
                        voltage_limit_v=-step.voltage_limit_v,
                        estimated_charge_c=charge,
                        dense_thickness_m=charge / self.area_m2 * NA_DENSE_M_PER_C_M2,
                    )
                )
            return
        self.stripped_in_cycle = True
        if step.capacity_limit is not None:
            limit = step.capacity_limit.coulombs(self.area_m2)
        elif self.plated_since_strip_c > 0:
            limit = DEFAULT_STRIP_LIMIT_FACTOR * self.plated_since_strip_c
        else:
            self.issues.append(
                ProtocolIssue(
                    step.source,
                    "this strip has no `capacity_limit` and no plate before it to take one from: "
                    "give `capacity_limit` (e.g. `1.1 mAh/cm^2`)",
                )
            )
            return
        expected = self.efficiency * self.plated_since_strip_c if self.plated_since_strip_c > 0 else limit
        charge = min(expected, limit)
        self.plated_since_strip_c = 0.0
        if pressure is not None:
            self.steps.append(
                PlannedStrip(
                    **common,
                    cycle=self.cycle,
                    pressure_pa=pressure,
                    estimated_duration_s=_div(charge, current),
                    current_a=current,
                    cutoff_v=step.cutoff_v,
                    capacity_limit_c=limit,
                    capacity_limit_is_default=step.capacity_limit is None,
                    estimated_charge_c=charge,
                )
            )


def build_plan(protocol: Protocol, *, assumed_strip_efficiency: float = ASSUMED_STRIP_EFFICIENCY) -> Plan:
    """Expand `protocol` into a `Plan`; raises `ProtocolError` for what only the expanded order shows.

    That is: a step with no pressure set before it, a strip with no capacity limit and no plate before it, and a
    protocol that expands to more than `MAX_PLAN_STEPS` steps. Rig limits are checked by `protocols.validate`.
    """
    if not 0 < assumed_strip_efficiency <= 1:
        raise ValueError(f"assumed_strip_efficiency must be in (0, 1], not {assumed_strip_efficiency}")
    if expanded_length(protocol.steps) > MAX_PLAN_STEPS:
        first_repeat = next((s for s in protocol.steps if isinstance(s, RepeatStep)), protocol.steps[0])
        raise ProtocolError(
            [ProtocolIssue(first_repeat.source, f"the protocol expands to more than {MAX_PLAN_STEPS} steps")]
        )
    builder = _Builder(protocol, assumed_strip_efficiency)
    builder.walk(protocol.steps, ())
    if builder.issues:
        raise ProtocolError(builder.issues)
    notes: list[str] = []
    if any(isinstance(s, PlannedStrip) for s in builder.steps):
        notes.append(
            f"strip durations are estimates: each strip is assumed to return {assumed_strip_efficiency:.0%} of the "
            "charge plated since the previous strip; its cut-off voltage ends it"
        )
    if any(isinstance(s, PlannedPressure) for s in builder.steps):
        notes.append("pressure steps are estimated as ramp time (a first ramp from 0 kPa; none for a set) plus settle")
    cell = protocol.cell
    return Plan(
        name=protocol.name,
        description=protocol.description,
        operator=protocol.operator,
        source_file=protocol.filename,
        cell_id=cell.id,
        electrolyte=cell.electrolyte,
        working_electrode=cell.working_electrode,
        counter_electrode=cell.counter_electrode,
        electrode_area_m2=cell.electrode_area_m2,
        steps=tuple(builder.steps),
        assumed_strip_efficiency=assumed_strip_efficiency,
        max_dense_thickness_m=builder.max_deposit_c / cell.electrode_area_m2 * NA_DENSE_M_PER_C_M2,
        notes=tuple(notes),
    )
