"""Property-based: generated protocols plan consistently; mutated YAML fails only with `ProtocolError`."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import (
    Plan,
    PlannedHold,
    PlannedPlate,
    PlannedPressure,
    PlannedRest,
    PlannedStrip,
    ProtocolError,
    validate_protocol,
)

from .strategies import Generated, mutated, valid_protocols
from .test_line_positions import editor_lines

LIBRARY = sorted((Path(__file__).resolve().parents[2] / "protocols" / "library").glob("*.yaml"))
LIBRARY_TEXTS = [p.read_text(encoding="utf-8") for p in LIBRARY]

# the task-leak guard is an autouse function-scoped fixture; it holds no state a generated example could share
_BASE = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def check_plan_consistency(plan: Plan) -> None:
    """What must hold for any plan, whatever its protocol."""
    assert [s.number for s in plan.steps] == list(range(1, len(plan.steps) + 1))
    assert plan.estimated_duration_s == pytest.approx(math.fsum(s.estimated_duration_s for s in plan.steps))
    assert plan.total_charge_c == pytest.approx(plan.plated_charge_c + plan.estimated_strip_charge_c)
    cycles = [s.cycle for s in plan.steps]
    assert cycles == sorted(cycles) and (not cycles or cycles[0] == 1)
    for s in plan.steps:
        assert math.isfinite(s.estimated_duration_s) and s.estimated_duration_s > 0
        assert 10e3 <= s.pressure_pa <= 250e3
        if isinstance(s, PlannedPlate):
            assert s.current_a < 0 and s.voltage_limit_v < 0 and s.on_resume != "restart"
            assert -s.current_a * s.estimated_duration_s == pytest.approx(s.estimated_charge_c)
            assert (s.capacity_c is None) != (s.duration_s is None)
        elif isinstance(s, PlannedStrip):
            assert s.current_a > 0 and s.cutoff_v > 0
            assert s.estimated_charge_c <= s.capacity_limit_c * (1 + 1e-12)
            assert s.current_a * s.estimated_duration_s == pytest.approx(s.estimated_charge_c)
        elif isinstance(s, (PlannedRest, PlannedHold)):
            assert s.estimated_duration_s == s.duration_s
        else:
            assert isinstance(s, PlannedPressure)
            assert s.estimated_duration_s >= s.settle_s


@settings(_BASE, max_examples=150)
@given(valid_protocols())
def test_generated_protocols_plan_consistently(gen: Generated) -> None:
    plan = validate_protocol(gen.text, "generated.yaml")
    check_plan_consistency(plan)
    exp = gen.expected
    assert [s.kind for s in plan.steps] == exp.kinds
    assert plan.electrode_area_m2 == pytest.approx(gen.area_m2)
    assert plan.plated_charge_c == pytest.approx(exp.plated_c, rel=1e-9)
    for step, value in zip(plan.steps, exp.values, strict=True):
        if isinstance(step, PlannedPressure):
            assert step.pressure_pa == pytest.approx(value, rel=1e-9)
        elif isinstance(step, (PlannedRest, PlannedHold)):
            assert step.duration_s == pytest.approx(value, rel=1e-9)
        elif isinstance(step, PlannedPlate):
            assert step.estimated_charge_c == pytest.approx(value, rel=1e-9)
        else:
            assert isinstance(step, PlannedStrip)
            assert step.current_a == pytest.approx(value, rel=1e-9)
    # plating time is capacity / current, summed
    plate_s = math.fsum(s.estimated_duration_s for s in plan.steps if isinstance(s, PlannedPlate))
    plates = [s for s in plan.steps if isinstance(s, PlannedPlate)]
    assert plate_s == pytest.approx(math.fsum(-s.estimated_charge_c / s.current_a for s in plates))


def _only_protocol_errors(text: str) -> Plan | None:
    try:
        plan = validate_protocol(text, "mutated.yaml")
    except ProtocolError as exc:
        lines = editor_lines(text)  # an editor's lines (LF, CRLF, CR): not YAML 1.1's (ADR 0022)
        for issue in exc.issues:
            assert 1 <= issue.mark.line <= len(lines), f"{issue} is past the last line ({len(lines)})"
            assert 1 <= issue.mark.col <= len(lines[issue.mark.line - 1]) + 1, f"{issue} is past the end of its line"
            assert str(issue).startswith(f"mutated.yaml:{issue.mark.line}:{issue.mark.col}: ")
            assert issue.message
        return None
    check_plan_consistency(plan)
    return plan


@settings(_BASE, max_examples=300)
@given(st.sampled_from(LIBRARY_TEXTS).flatmap(mutated))
def test_mutated_library_protocols_fail_only_with_protocol_errors(text: str) -> None:
    _only_protocol_errors(text)


@settings(_BASE, max_examples=100)
@given(valid_protocols().flatmap(lambda g: mutated(g.text)))
def test_mutated_generated_protocols_fail_only_with_protocol_errors(text: str) -> None:
    _only_protocol_errors(text)


@settings(_BASE, max_examples=100)
@given(st.text(max_size=200))
def test_arbitrary_text_fails_only_with_protocol_errors(text: str) -> None:
    _only_protocol_errors(text)
