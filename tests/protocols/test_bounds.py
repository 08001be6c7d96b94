"""Every quantity with a physical meaning is bounded, and the error says the bound (issue 14, item 8).

A protocol can no longer ask for 1000 times what was meant: a current density above the rig's plausibility limit
(10 mA/cm² unless the rig configuration raises it), an absolute current or capacity that is implausible on the
cell's electrode, or a tolerance, rate, time, voltage or size outside what the physics allows (ADR 0022).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from protocols import ProtocolError, RigLimits, bounds, validate_protocol
from protocols.model import MAX_DURATION_S, Capacity, Cell, HoldStep, PlateStep, PressureStep, RestStep, StripStep
from protocols.units import Kind, parse_quantity

from .helpers import protocol_text

PRESSURE = "  - pressure: {target: 180 kPa}\n"
SET = PRESSURE.replace("{", "{{").replace("}", "}}")  # the same, in a template


def at(text: str, token: str) -> str:
    """`b.yaml:LINE:COL` of the first `token` in `text`."""
    for n, line in enumerate(text.splitlines(), start=1):
        if token in line:
            return f"b.yaml:{n}:{line.index(token) + 1}"
    raise AssertionError(f"{token!r} is not in the text")


def issues(text: str, limits: RigLimits | None = None) -> list[str]:
    with pytest.raises(ProtocolError) as info:
        validate_protocol(text, "b.yaml", limits)
    return [str(i) for i in info.value.issues]


# (what, protocol template with {v}, electrode, values that pass, [(value that fails, text the error holds)])
CASES: list[tuple[str, str, str, list[str], list[tuple[str, str]]]] = [
    (
        "pressure target",
        "  - pressure: {{target: {v}}}\n",
        "diameter: 12 mm",
        ["180 kPa"],
        [("180 MPa", "at most 10 MPa")],
    ),
    (
        "a step's pressure",
        SET + "  - rest: {{duration: 1 min, pressure: {v}}}\n",
        "diameter: 12 mm",
        ["250 kPa"],
        [("20 MPa", "at most 10 MPa")],
    ),
    (
        "tolerance",
        "  - pressure: {{target: 180 kPa, tolerance: {v}}}\n",
        "diameter: 12 mm",
        ["0.1 kPa", "2 kPa", "20 kPa", "100 Pa"],
        [("1 GPa", "at most 20 kPa"), ("21 kPa", "at most 20 kPa"), ("50 Pa", "at least 0.1 kPa")],
    ),
    (
        "rate",
        "  - pressure: {{target: 180 kPa, rate: {v}}}\n",
        "diameter: 12 mm",
        ["0.06 kPa/min", "30 kPa/min", "1200 kPa/min", "6000 kPa/min"],
        [("30 Pa/min", "at least 0.06 kPa/min"), ("7 MPa/min", "at most 6000 kPa/min")],
    ),
    (
        "settle",
        "  - pressure: {{target: 180 kPa, settle: {v}}}\n",
        "diameter: 12 mm",
        ["1 s", "5 min", "24 h"],
        [("500 ms", "at least 1 s"), ("2 d", "at most 24 h")],
    ),
    (
        "timeout",
        "  - pressure: {{target: 180 kPa, settle: 1 s, timeout: {v}}}\n",
        "diameter: 12 mm",
        ["2 s", "1 h", "7 d"],
        [("8 d", "at most 7 d")],
    ),
    (
        "rest duration",
        SET + "  - rest: {{duration: {v}}}\n",
        "diameter: 12 mm",
        ["1 s", "90 d"],
        [("10 ms", "at least 1 s"), ("2 years", "at most 366 d")],
    ),
    (
        "plate duration",
        SET + "  - plate: {{current_density: 0.5 mA/cm^2, duration: {v}}}\n",
        "diameter: 12 mm",
        ["1 s", "2 h"],
        [("0.2 s", "at least 1 s")],
    ),
    (
        "areal capacity",
        SET + "  - plate: {{current_density: 0.5 mA/cm^2, capacity: {v}}}\n",
        "diameter: 12 mm",
        ["1 mAh/cm^2", "20 mAh/cm^2"],
        [("21 mAh/cm^2", "at most 20 mAh/cm^2"), ("1 Ah/cm^2", "at most 20 mAh/cm^2")],
    ),
    (
        "absolute capacity",
        SET + "  - plate: {{current: 5 mA, capacity: {v}}}\n",
        "area: 20 cm^2",
        ["1.13 mAh", "400 mAh"],
        [("1 Ah", "at most 400 mAh")],
    ),
    (
        "capacity limit",
        SET + "  - strip: {{current_density: 0.5 mA/cm^2, cutoff: 1 V, capacity_limit: {v}}}\n",
        "diameter: 12 mm",
        ["1.1 mAh/cm^2", "20 mAh/cm^2"],
        [("1.1 Ah/cm^2", "at most 20 mAh/cm^2")],
    ),
    (
        "voltage limit",
        SET + "  - plate: {{current_density: 0.5 mA/cm^2, capacity: 1 mAh/cm^2, voltage_limit: {v}}}\n",
        "diameter: 12 mm",
        ["10 mV", "1 V", "2.9 V"],
        [("1 mV", "at least 10 mV"), ("1 kV", "at most 5 V")],
    ),
    (
        "cut-off",
        SET + "  - strip: {{current_density: 0.5 mA/cm^2, cutoff: {v}, capacity_limit: 1 mAh/cm^2}}\n",
        "diameter: 12 mm",
        ["10 mV", "1 V"],
        [("5 mV", "at least 10 mV"), ("1000 V", "at most 5 V")],
    ),
    (
        "diameter",
        SET,
        "diameter: {v}",
        ["2 mm", "12 mm", "50 mm"],
        [("12 m", "at most 50 mm"), ("1 mm", "at least 2 mm")],
    ),
    (
        "area",
        SET,
        "area: {v}",
        ["0.03 cm^2", "20 cm^2"],
        [("1.131 m^2", "at most 20 cm^2"), ("1 mm^2", "at least 0.03 cm^2")],
    ),
]


def _text(template: str, size: str, value: str) -> str:
    return protocol_text(template.format(v=value), size=size.format(v=value))


@pytest.mark.parametrize(
    ("template", "size", "value"),
    [(t, s, v) for _, t, s, ok, _ in CASES for v in ok],
    ids=[f"{what}={v}" for what, _, _, ok, _ in CASES for v in ok],
)
def test_a_plausible_value_passes(template: str, size: str, value: str) -> None:
    validate_protocol(_text(template, size, value), "b.yaml")


@pytest.mark.parametrize(
    ("template", "size", "value", "bound"),
    [(t, s, v, b) for _, t, s, _, bad in CASES for v, b in bad],
    ids=[f"{what}={v}" for what, _, _, _, bad in CASES for v, _ in bad],
)
def test_an_implausible_value_is_refused_at_its_place_naming_the_bound(
    template: str, size: str, value: str, bound: str
) -> None:
    text = _text(template, size, value)
    (issue,) = issues(text)
    assert issue.startswith(f"{at(text, value)}: "), issue
    assert bound in issue and "is the unit right?" in issue


def _bounds_of(model: type[BaseModel]) -> dict[str, list[Any]]:
    """Each float or capacity field of `model`, with the bounds annotated on it (through an optional, too)."""
    found: dict[str, list[Any]] = {}
    for name, info in model.model_fields.items():
        parts = [info.annotation, *get_args(info.annotation)]
        if not {float, Capacity} & {get_args(p)[0] if get_origin(p) is Annotated else p for p in parts}:
            continue
        metadata = [*info.metadata, *(m for p in parts if get_origin(p) is Annotated for m in p.__metadata__)]
        found[name] = [m.bound for m in metadata if getattr(m, "bound", None) is not None]
    return found


@pytest.mark.parametrize("model", [Cell, PressureStep, RestStep, HoldStep, PlateStep, StripStep])
def test_every_quantity_of_the_model_has_a_finite_bound(model: type[BaseModel]) -> None:
    """A new quantity field without a bound fails here: the model's own or, for currents, the rig limits'."""
    fields = _bounds_of(model)
    assert fields, f"{model.__name__} has no quantity fields?"
    for name, found in fields.items():
        if name in ("current_a", "current_density_a_m2"):
            limits = RigLimits()
            assert math.isfinite(limits.max_current_a) and math.isfinite(limits.max_current_density_a_m2)
            continue
        assert len(found) == 1, f"{model.__name__}.{name} has no bound"
        for lower, upper in found[0].limits.values():
            assert 0 < upper.si < math.inf, f"{model.__name__}.{name}"
            assert lower is None or 0 < lower.si < upper.si, f"{model.__name__}.{name}"


ALL_BOUNDS = [b for b in vars(bounds).values() if isinstance(b, bounds.Bound)]


@pytest.mark.parametrize("bound", ALL_BOUNDS, ids=lambda b: b.what)
def test_every_bound_is_plausible_itself(bound: bounds.Bound) -> None:
    """Its example passes it, its ends parse as its kind, and its description says the range as written."""
    bound.check(parse_quantity(bound.example, *bound.kinds))
    for kind, (lower, upper) in bound.limits.items():
        assert lower is None or lower.si == parse_quantity(lower.text, kind).si
        for end in (lower, upper):
            assert end is None or end.text in bound.describe()


def test_the_longest_plausible_step_is_the_plan_checks_one() -> None:
    upper = bounds.DURATION.limits[Kind.DURATION][1]
    assert upper is not None and upper.si == MAX_DURATION_S  # a plate's capacity / current is held to it as well


# --- the current: a plausibility limit per area, from the rig configuration ------------------------------------


def test_a_current_density_in_a_per_cm2_instead_of_ma_is_refused_saying_how_to_raise_the_limit() -> None:
    text = protocol_text(PRESSURE + "  - plate: {current_density: 0.5 A/cm^2, capacity: 1 mAh/cm^2}\n")
    (issue,) = issues(text)
    assert issue.startswith(
        f"{at(text, '0.5 A')}: `current_density`: 500 mA/cm² is more than the plausibility limit of 10 mA/cm²"
    )
    assert "is the unit right?" in issue
    assert "`max_current_density_ma_cm2`" in issue and "RIG_RIG__MAX_CURRENT_DENSITY_MA_CM2" in issue


def test_an_absolute_current_in_a_instead_of_ma_is_checked_through_the_electrode_area() -> None:
    text = protocol_text(PRESSURE + "  - strip: {current: 0.565 A, cutoff: 1 V, capacity_limit: 1 mAh}\n")
    (issue,) = issues(text)
    assert issue.startswith(
        f"{at(text, '0.565 A')}: `current`: 565 mA on 1.131 cm² is 499.6 mA/cm², more than the plausibility limit of "
        "10 mA/cm²"
    )


@pytest.mark.parametrize(("density", "ok"), [("10 mA/cm^2", True), ("10.1 mA/cm^2", False), ("100 A/m^2", True)])
def test_the_limit_is_inclusive(density: str, ok: bool) -> None:
    text = protocol_text(PRESSURE + f"  - plate: {{current_density: {density}, duration: 1 h}}\n")
    if ok:
        validate_protocol(text, "b.yaml")
    else:
        assert "more than the plausibility limit of 10 mA/cm²" in issues(text)[0]


def test_the_rig_limits_raise_it() -> None:
    text = protocol_text(PRESSURE + "  - plate: {current_density: 0.5 A/cm^2, capacity: 1 mAh/cm^2}\n")
    validate_protocol(text, "b.yaml", RigLimits(max_current_density_a_m2=5000.0))
    (issue,) = issues(text, RigLimits(max_current_density_a_m2=4000.0))
    assert "more than the plausibility limit of 400 mA/cm²" in issue


def test_a_current_the_potentiostat_cannot_source_is_reported_once() -> None:
    text = protocol_text(PRESSURE + "  - plate: {current_density: 2 A/cm^2, capacity: 1 mAh/cm^2}\n")
    (issue,) = issues(text)
    assert "more than the potentiostat sources (1.05 A)" in issue


def test_an_absolute_capacity_is_checked_through_the_electrode_area() -> None:
    text = protocol_text(PRESSURE + "  - plate: {current: 0.5 mA, capacity: 30 mAh}\n")
    (issue,) = issues(text)
    assert issue.startswith(
        f"{at(text, '30 mAh')}: `capacity`: 30 mAh on 1.131 cm² is 26.53 mAh/cm², more than 20 mAh/cm^2"
    )


# --- cross-field bounds ----------------------------------------------------------------------------------------


def test_a_tolerance_as_large_as_the_target_is_refused() -> None:
    text = protocol_text("  - pressure: {target: 15 kPa, tolerance: 15 kPa}\n")
    (issue,) = issues(text)
    assert issue.startswith(f"{at(text, '15 kPa}')}: `tolerance`: 15 kPa is not smaller than the target (15 kPa)")
    low = RigLimits(min_pressure_pa=1e3)  # a rig that may go as low as 1 kPa; the default tolerance is 2 kPa
    text = protocol_text("  - pressure: {target: 1.5 kPa}\n")
    (issue,) = issues(text, low)
    assert issue.startswith("b.yaml:9:5: `tolerance`: 2 kPa (the default) is not smaller than the target (1.5 kPa)")
    validate_protocol(protocol_text("  - pressure: {target: 2.5 kPa}\n"), "b.yaml", low)


@pytest.mark.parametrize(
    ("body", "timeout", "settle"),
    [("settle: 5 min, timeout: 2 min", "2 min", "5 min"), ("timeout: 30 s", "30 s", "1 min, the default")],
)
def test_a_timeout_no_longer_than_the_settle_time_is_refused(body: str, timeout: str, settle: str) -> None:
    text = protocol_text(f"  - pressure: {{target: 180 kPa, {body}}}\n")
    (issue,) = issues(text)
    assert issue.startswith(f"{at(text, timeout + '}')}: `timeout`: {timeout} ")
    assert f"is not longer than `settle` ({settle}): the step could never finish" in issue
