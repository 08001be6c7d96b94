"""Validation before anything moves: text → loaded YAML → protocol → limits checked → `Plan`.

`validate_protocol(text, filename, limits)` is the one entry point for the engine and for `rig validate`. It raises
`ProtocolError` listing every problem found, each `FILE:LINE:COL: message`, or returns the `Plan`. Nothing here
reads files or touches hardware: the caller passes the text and the rig's limits as plain values.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError

from protocols import bounds
from protocols.errors import ProtocolError, ProtocolIssue
from protocols.model import (
    DEFAULT_SETTLE,
    DEFAULT_TOLERANCE,
    MAX_DURATION_S,
    Capacity,
    Cell,
    HoldStep,
    PlateStep,
    PressureStep,
    Protocol,
    RepeatStep,
    RestStep,
    Step,
    StripStep,
    parse_protocol,
    value_at,
)
from protocols.plan import NA_DENSE_M_PER_C_M2, Plan, build_plan
from protocols.units import Kind
from protocols.yaml_loader import Path, YamlDocument, load_yaml

__all__ = [
    "DEFAULT_MAX_CURRENT_DENSITY_A_M2",
    "KEITHLEY_2450_MAX_CURRENT_A",
    "RAISE_CURRENT_DENSITY",
    "RigLimits",
    "check_limits",
    "load_protocol",
    "validate_protocol",
]

_STEP: TypeAdapter[Step] = TypeAdapter(Step)

#: The Keithley 2450 sources at most ±1.05 A (its 1 A range).
KEITHLEY_2450_MAX_CURRENT_A = 1.05
#: The current-density plausibility limit of a rig configuration that says nothing: 10 mA/cm² (in A/m²).
DEFAULT_MAX_CURRENT_DENSITY_A_M2 = 100.0
#: How an operator raises it (the message of a refused current says so).
RAISE_CURRENT_DENSITY = (
    "If it is meant, raise `max_current_density_ma_cm2` in the [rig] section of the rig configuration "
    "(or set RIG_RIG__MAX_CURRENT_DENSITY_MA_CM2)"
)


@dataclass(frozen=True, kw_only=True)
class RigLimits:
    """What the rig can do, as plain values. The defaults are those of a rig configuration that says nothing.

    - pressure: `rig.min_pressure_kpa` / `rig.max_pressure_kpa` (10–250 kPa);
    - current magnitude: up to what the potentiostat sources (1.05 A for the 2450), down to 1 nA;
    - current density: at most `rig.max_current_density_ma_cm2` (10 mA/cm², twenty times the paper's 0.5), a
      plausibility limit against unit slips (`A` for `mA`); an absolute current is divided by the cell's area;
    - voltage: a strip cut-off or a plate limit must lie inside the potentiostat's compliance
      (`potentiostat.voltage_limit_v`, 3 V), which is only the hardware backstop;
    - electrode area: when the rig names one, the protocol's cell must match it within 2 % (pressure is force / area).
    """

    min_pressure_pa: float = 10e3
    max_pressure_pa: float = 250e3
    max_current_a: float = KEITHLEY_2450_MAX_CURRENT_A
    min_current_a: float = 1e-9
    max_current_density_a_m2: float = DEFAULT_MAX_CURRENT_DENSITY_A_M2
    voltage_compliance_v: float = 3.0
    electrode_area_m2: float | None = None
    area_tolerance: float = 0.02


def _si(value: float, unit: str) -> str:
    """A value with an SI prefix, e.g. `565 µA`."""
    magnitude = abs(value)
    for factor, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f")):
        if magnitude >= factor or factor == 1e-15:
            return f"{value / factor:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"  # pragma: no cover


def _ma_cm2(a_m2: float) -> str:
    """A current density in mA/cm², e.g. `499.6`."""
    return f"{a_m2 / 10:.4g}"


class _Checker:
    def __init__(self, area_m2: float | None, doc: YamlDocument, limits: RigLimits) -> None:
        self.doc = doc
        self.limits = limits
        self.area_m2 = area_m2
        self.issues: list[ProtocolIssue] = []

    def issue(self, path: Path, field: str | None, message: str) -> None:
        at = (*path, field) if field is not None and (*path, field) in self.doc.value_marks else path
        self.issues.append(ProtocolIssue(self.doc.mark(at, prefer_key=at == path), message))

    def pressure(self, path: Path, field: str, value_pa: float | None) -> None:
        lo, hi = self.limits.min_pressure_pa, self.limits.max_pressure_pa
        if value_pa is not None and not lo <= value_pa <= hi:
            self.issue(
                path,
                field,
                f"`{field}`: {value_pa / 1e3:.4g} kPa is outside the rig's pressure range "
                f"{lo / 1e3:g}–{hi / 1e3:g} kPa",
            )

    def current(self, path: Path, step: PlateStep | StripStep) -> float:
        """The current's magnitude in A, or 0 when it is out of range (reported) or cannot be known."""
        field = "current" if step.current_a is not None else "current_density"
        if self.area_m2 is None and step.current_a is None:
            return 0.0  # the cell is invalid (reported already): a current density cannot be checked
        amps = step.magnitude_a(self.area_m2 or 0.0)
        on_area = f" on {(self.area_m2 or 0.0) * 1e4:.4g} cm²" if field == "current_density" else ""
        if amps > self.limits.max_current_a:
            self.issue(
                path,
                field,
                f"`{field}`: {_si(amps, 'A')}{on_area} is more than the potentiostat sources "
                f"({_si(self.limits.max_current_a, 'A')})",
            )
            return 0.0
        if amps < self.limits.min_current_a:
            self.issue(
                path,
                field,
                f"`{field}`: {_si(amps, 'A')}{on_area} is below what the potentiostat can source "
                f"({_si(self.limits.min_current_a, 'A')})",
            )
            return 0.0
        if self.area_m2 is not None and not self.plausible_density(path, field, amps, self.area_m2):
            return 0.0
        return amps

    def plausible_density(self, path: Path, field: str, amps: float, area_m2: float) -> bool:
        """Whether `amps` on `area_m2` is within the rig's current-density limit (reported if not)."""
        density = amps / area_m2
        limit = self.limits.max_current_density_a_m2
        if density <= limit * (1 + 1e-9):
            return True
        shown = f"{_ma_cm2(density)} mA/cm²"
        if field == "current":
            shown = f"{_si(amps, 'A')} on {area_m2 * 1e4:.4g} cm² is {shown},"
        else:
            shown = f"{shown} is"
        self.issue(
            path,
            field,
            f"`{field}`: {shown} more than the plausibility limit of {_ma_cm2(limit)} mA/cm² (the paper plates at "
            f"0.5 mA/cm²); is the unit right? {RAISE_CURRENT_DENSITY}",
        )
        return False

    def capacity(self, path: Path, field: str, charge: Capacity) -> None:
        """An absolute capacity, per area of the cell's electrode, within the areal capacity's bound."""
        if charge.areal or self.area_m2 is None:
            return  # an areal one is bounded by the model
        per_area = charge.si / self.area_m2
        upper = bounds.CAPACITY.limits[Kind.AREAL_CHARGE][1]
        assert upper is not None
        if per_area > upper.si * (1 + 1e-9):
            self.issue(
                path,
                field,
                f"`{field}`: {charge.text} on {self.area_m2 * 1e4:.4g} cm² is {per_area / 36000:.4g} mAh/cm², "
                f"more than {upper.text} ({upper.si * NA_DENSE_M_PER_C_M2 * 1e6:.0f} µm of dense Na); "
                "is the unit right?",
            )

    def pressure_step(self, path: Path, step: PressureStep) -> None:
        """The pressure step's fields against each other: the band inside the target, the timeout past the settle."""
        self.pressure(path, "target", step.target_pa)
        if step.tolerance_pa >= step.target_pa:
            tolerance = self.written(path, "tolerance", f"{DEFAULT_TOLERANCE} (the default)")
            self.issue(
                path,
                "tolerance",
                f"`tolerance`: {tolerance} is not smaller than the target ({self.written(path, 'target', '')}): "
                "the band would reach zero force",
            )
        if step.timeout_s is not None and step.timeout_s <= step.settle_s:
            settle = self.written(path, "settle", f"{DEFAULT_SETTLE}, the default")
            self.issue(
                path,
                "timeout",
                f"`timeout`: {self.written(path, 'timeout', '')} is not longer than `settle` ({settle}): the step "
                "could never finish",
            )

    def written(self, path: Path, field: str, default: str) -> str:
        """A field's value as the operator wrote it, or `default` if it was not written."""
        value = value_at(self.doc.data, (*path, field))
        return str(value).strip() if isinstance(value, str) else default

    def voltage(self, path: Path, field: str, value_v: float, what: str) -> None:
        compliance = self.limits.voltage_compliance_v
        if value_v >= compliance:
            self.issue(
                path,
                field,
                f"`{field}`: {what} of {value_v:g} V is not inside the potentiostat's voltage compliance of "
                f"{compliance:g} V: the hardware limit would act first",
            )

    def duration(self, path: Path, field: str, charge: Capacity, amps: float, what: str) -> None:
        if amps <= 0 or (charge.areal and self.area_m2 is None):
            return
        seconds = charge.coulombs(self.area_m2 or 0.0) / amps
        if seconds > MAX_DURATION_S:
            self.issue(
                path,
                field,
                f"`{field}`: {what} `{charge.text}` at {_si(amps, 'A')} would take {seconds / 86400:.4g} days; "
                "is the unit right?",
            )

    def steps(self, steps: tuple[Step, ...], base: Path) -> None:
        for i, step in enumerate(steps):
            self.step(step, (*base, i, step.kind))

    def raw_steps(self, raw: object, base: Path) -> None:
        """Check what can be checked in steps whose protocol did not validate as a whole."""
        if not isinstance(raw, list):
            return
        for i, item in enumerate(raw):
            try:
                step = _STEP.validate_python(item)
            except ValidationError:
                body = item.get("repeat") if isinstance(item, dict) and len(item) == 1 else None
                if isinstance(body, dict):
                    self.raw_steps(body.get("steps"), (*base, i, "repeat", "steps"))
                continue
            self.step(step, (*base, i, step.kind))

    def step(self, step: Step, path: Path) -> None:
        if isinstance(step, RepeatStep):
            self.steps(step.steps, (*path, "steps"))
        elif isinstance(step, PressureStep):
            self.pressure_step(path, step)
        else:
            self.pressure(path, "pressure", step.pressure_pa)
            if isinstance(step, PlateStep):
                amps = self.current(path, step)
                self.voltage(path, "voltage_limit", step.voltage_limit_v, "the plating voltage limit")
                if step.capacity is not None:
                    self.capacity(path, "capacity", step.capacity)
                    self.duration(path, "capacity", step.capacity, amps, "plating")
            elif isinstance(step, StripStep):
                amps = self.current(path, step)
                self.voltage(path, "cutoff", step.cutoff_v, "the cut-off")
                if step.capacity_limit is not None:
                    self.capacity(path, "capacity_limit", step.capacity_limit)
                    self.duration(path, "capacity_limit", step.capacity_limit, amps, "stripping")
            else:
                assert isinstance(step, (RestStep, HoldStep))

    def cell(self, cell: Cell) -> None:
        rig_area = self.limits.electrode_area_m2
        if rig_area is None or rig_area <= 0 or self.area_m2 is None:
            return
        if abs(self.area_m2 - rig_area) > self.limits.area_tolerance * rig_area:
            field = "diameter" if cell.diameter_m is not None else "area"
            self.issue(
                ("cell",),
                field,
                f"`{field}`: the cell's electrode ({self.area_m2 * 1e4:.4g} cm²) is not the rig's "
                f"({rig_area * 1e4:.4g} cm²): the pressure would be wrong",
            )


def check_limits(protocol: Protocol, doc: YamlDocument, limits: RigLimits) -> list[ProtocolIssue]:
    """Every place where `protocol` asks more than the rig can do, at the line and column of the value."""
    checker = _Checker(protocol.cell.electrode_area_m2, doc, limits)
    checker.cell(protocol.cell)
    checker.steps(protocol.steps, ("steps",))
    return checker.issues


def _check_what_validates(doc: YamlDocument, limits: RigLimits) -> list[ProtocolIssue]:
    """For a protocol that did not validate: the limit checks of its cell and of each step that did."""
    data = doc.data if isinstance(doc.data, dict) else {}
    try:
        cell: Cell | None = Cell.model_validate(data.get("cell"))
    except ValidationError:
        cell = None
    checker = _Checker(cell.electrode_area_m2 if cell is not None else None, doc, limits)
    if cell is not None:
        checker.cell(cell)
    checker.raw_steps(data.get("steps"), ("steps",))
    return checker.issues


def load_protocol(text: str, filename: str) -> tuple[Protocol, YamlDocument]:
    """Load and parse protocol text (no rig limits); raises `ProtocolError`."""
    doc = load_yaml(text, filename)
    return parse_protocol(doc), doc


def validate_protocol(text: str, filename: str, limits: RigLimits | None = None) -> Plan:
    """Validate protocol text against the rig's limits and plan it; raises `ProtocolError` listing every problem."""
    limits = limits or RigLimits()
    doc = load_yaml(text, filename)
    issues = list(doc.issues)
    try:
        protocol = parse_protocol(doc, loader_issues=False)
    except ProtocolError as exc:
        raise ProtocolError([*issues, *exc.issues, *_check_what_validates(doc, limits)]) from None
    issues.extend(check_limits(protocol, doc, limits))
    try:
        plan = build_plan(protocol)
    except ProtocolError as exc:
        issues.extend(exc.issues)
    if issues:
        raise ProtocolError(issues)
    return plan
