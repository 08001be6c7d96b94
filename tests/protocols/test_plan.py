"""The plan: repeats expanded, SI values, the sign convention, resume defaults, indices and estimates."""

from __future__ import annotations

import pytest

from protocols import (
    Plan,
    PlannedHold,
    PlannedPlate,
    PlannedPressure,
    PlannedRest,
    PlannedStrip,
    ProtocolError,
    RigLimits,
    load_protocol,
    validate_protocol,
)
from protocols.plan import ASSUMED_STRIP_EFFICIENCY, DEFAULT_STRIP_LIMIT_FACTOR, build_plan, expanded_length

from .helpers import protocol_text


def plan(steps: str) -> Plan:
    return validate_protocol(protocol_text(steps, size="area: 1 cm^2"), "p.yaml")


def test_plating_current_is_negative_and_stripping_positive() -> None:
    p = validate_protocol(
        protocol_text(
            "  - pressure: {target: 180 kPa}\n"
            "  - plate: {current_density: 0.5 mA/cm^2, capacity: 1 mAh/cm^2, voltage_limit: 0.8 V}\n"
            "  - strip: {current: 0.5 mA, cutoff: 1 V}\n",
            size="area: 1 cm^2",
        ),
        "p.yaml",
    )
    _, plate, strip = p.steps
    assert isinstance(plate, PlannedPlate) and isinstance(strip, PlannedStrip)
    assert plate.current_a == pytest.approx(-0.5e-3)
    assert plate.voltage_limit_v == -0.8
    assert strip.current_a == pytest.approx(0.5e-3)
    assert strip.cutoff_v == 1.0
    assert plate.capacity_c == pytest.approx(3.6) and plate.estimated_charge_c > 0 and strip.estimated_charge_c > 0


def test_resume_defaults() -> None:
    p = validate_protocol(
        protocol_text(
            "  - pressure: {target: 180 kPa}\n"
            "  - rest: {duration: 1 min}\n"
            "  - plate: {current: 1 mA, duration: 1 h}\n"
            "  - strip: {current: 1 mA, cutoff: 1 V}\n"
            "  - hold: {duration: 1 min}\n"
            "  - rest: {duration: 1 min, on_resume: abort}\n"
        ),
        "p.yaml",
    )
    assert [(s.kind, s.on_resume) for s in p.steps] == [
        ("pressure", "restart"),
        ("rest", "restart"),
        ("plate", "continue"),
        ("strip", "continue"),
        ("hold", "continue"),
        ("rest", "abort"),
    ]


def test_pressure_is_inherited_and_a_step_may_name_its_own() -> None:
    p = validate_protocol(
        protocol_text(
            "  - pressure: {target: 100 kPa, rate: 10 kPa/min, tolerance: 1 kPa, settle: 30 s, timeout: 20 min}\n"
            "  - rest: {duration: 1 min}\n"
            "  - hold: {duration: 1 min, pressure: 150 kPa}\n"
            "  - rest: {duration: 1 min}\n"
            "  - pressure: {target: 50 kPa}\n"
        ),
        "p.yaml",
    )
    first, rest1, hold, rest2, second = p.steps
    assert isinstance(first, PlannedPressure) and isinstance(second, PlannedPressure)
    assert [s.pressure_pa for s in p.steps] == [100e3, 100e3, 150e3, 150e3, 50e3]
    assert first.previous_pa is None and second.previous_pa == 150e3
    assert first.ramp_rate_pa_s == pytest.approx(10e3 / 60) and second.ramp_rate_pa_s is None
    assert (first.tolerance_pa, first.settle_s, first.timeout_s) == (1e3, 30.0, 1200.0)
    assert (second.tolerance_pa, second.settle_s, second.timeout_s) == (2e3, 60.0, None)
    # ramp 0 → 100 kPa at 10 kPa/min = 10 min, plus 30 s settle; a set is counted as its settle time only
    assert first.estimated_duration_s == pytest.approx(630.0)
    assert second.estimated_duration_s == pytest.approx(60.0)
    assert isinstance(rest1, PlannedRest) and isinstance(hold, PlannedHold) and isinstance(rest2, PlannedRest)


def test_repeats_expand_with_cycles_iterations_and_indices() -> None:
    p = validate_protocol(
        protocol_text(
            "  - pressure: {target: 180 kPa}\n"
            "  - repeat:\n"
            "      count: 3\n"
            "      steps:\n"
            "        - plate: {current: 1 mA, capacity: 1 mAh}\n"
            "        - repeat:\n"
            "            count: 2\n"
            "            steps:\n"
            "              - rest: {duration: 1 min, label: inner}\n"
            "        - strip: {current: 1 mA, cutoff: 1 V}\n"
            "  - hold: {duration: 1 min}\n"
        ),
        "p.yaml",
    )
    assert len(p.steps) == 1 + 3 * 4 + 1
    assert [s.number for s in p.steps] == list(range(1, 15))
    assert [s.kind for s in p.steps[1:5]] == ["plate", "rest", "rest", "strip"]
    assert [s.step_index for s in p.steps[:6]] == [1, 2, 3, 3, 4, 2]
    assert p.steps[-1].step_index == 5
    assert [s.iteration for s in p.steps[1:5]] == [(1,), (1, 1), (1, 2), (1,)]
    assert p.steps[10].iteration == (3, 1)
    assert [s.cycle for s in p.steps] == [1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3]
    assert p.cycles == 3
    assert p.steps[2].label == "inner"
    assert {s.source.line for s in p.steps if s.kind == "plate"} == {13}


def test_strip_capacity_limit_defaults_from_the_plates_before_it() -> None:
    p = plan(
        "  - pressure: {target: 180 kPa}\n"
        "  - plate: {current_density: 1 mA/cm^2, capacity: 1 mAh/cm^2}\n"
        "  - plate: {current_density: 1 mA/cm^2, duration: 30 min}\n"
        "  - strip: {current_density: 1 mA/cm^2, cutoff: 1 V}\n"
        "  - plate: {current_density: 1 mA/cm^2, capacity: 1 mAh/cm^2}\n"
        "  - strip: {current_density: 1 mA/cm^2, cutoff: 1 V, capacity_limit: 0.5 mAh/cm^2}\n"
    )
    strips = [s for s in p.steps if isinstance(s, PlannedStrip)]
    plated_first = 1.5 * 3.6  # 1.5 mAh/cm² on 1 cm², in C
    assert strips[0].capacity_limit_is_default
    assert strips[0].capacity_limit_c == pytest.approx(DEFAULT_STRIP_LIMIT_FACTOR * plated_first)
    assert strips[0].estimated_charge_c == pytest.approx(ASSUMED_STRIP_EFFICIENCY * plated_first)
    # an explicit limit below the expected return caps the estimate
    assert not strips[1].capacity_limit_is_default
    assert strips[1].capacity_limit_c == pytest.approx(1.8)
    assert strips[1].estimated_charge_c == pytest.approx(1.8)
    assert strips[1].estimated_duration_s == pytest.approx(1800.0)


def test_totals_and_estimates() -> None:
    p = plan(
        "  - pressure: {target: 180 kPa, settle: 1 min}\n"
        "  - rest: {duration: 10 min}\n"
        "  - plate: {current_density: 0.5 mA/cm^2, capacity: 1 mAh/cm^2}\n"
        "  - strip: {current_density: 0.5 mA/cm^2, cutoff: 1 V}\n"
    )
    plated = 3.6  # 1 mAh on 1 cm²
    assert p.plated_charge_c == pytest.approx(plated)
    assert p.estimated_strip_charge_c == pytest.approx(0.85 * plated)
    assert p.total_charge_c == pytest.approx(1.85 * plated)
    assert p.estimated_duration_s == pytest.approx(60 + 600 + 7200 + 0.85 * 7200)
    assert p.max_dense_thickness_m == pytest.approx(8.86e-6)
    assert any("85%" in n for n in p.notes)


def test_header_and_cell_reach_the_plan() -> None:
    p = validate_protocol(protocol_text("  - pressure: {target: 180 kPa}\n", electrolyte="EC:DMC"), "dir/p.yaml")
    assert (p.name, p.operator, p.cell_id, p.electrolyte, p.source_file) == (
        "test protocol",
        "tester",
        "t1",
        "ec-dmc",
        "dir/p.yaml",
    )
    assert p.electrode_area_m2 == pytest.approx(1.1310e-4, rel=1e-4)
    text = protocol_text("  - pressure: {target: 180 kPa}\n", electrolyte="1 M NaFSI in diglyme")
    free = validate_protocol(text, "p")
    assert free.electrolyte == "1 M NaFSI in diglyme"


def test_the_cell_must_match_the_rigs_electrode_when_the_rig_names_one() -> None:
    text = protocol_text("  - pressure: {target: 180 kPa}\n")
    validate_protocol(text, "p.yaml", RigLimits(electrode_area_m2=1.131e-4))
    with pytest.raises(ProtocolError) as info:
        validate_protocol(text, "p.yaml", RigLimits(electrode_area_m2=2.011e-4))
    (issue,) = info.value.issues
    assert (issue.mark.line, issue.mark.col) == (7, 13)
    assert "the cell's electrode (1.131 cm²) is not the rig's (2.011 cm²)" in issue.message


def test_compliance_and_current_limits_come_from_the_rig() -> None:
    text = protocol_text(
        "  - pressure: {target: 180 kPa}\n"
        "  - plate: {current: 10 mA, capacity: 1 mAh}\n"
        "  - strip: {current: 10 mA, cutoff: 1.5 V}\n"
    )
    validate_protocol(text, "p.yaml")
    with pytest.raises(ProtocolError) as info:
        validate_protocol(text, "p.yaml", RigLimits(max_current_a=0.005, voltage_compliance_v=1.2))
    assert [(i.mark.line, i.message.split(":")[0]) for i in info.value.issues] == [
        (10, "`current`"),
        (11, "`current`"),
        (11, "`cutoff`"),
    ]


def test_the_expansion_is_bounded_before_it_happens() -> None:
    protocol, _ = load_protocol(
        protocol_text(
            "  - pressure: {target: 180 kPa}\n"
            "  - repeat: {count: 10000, steps: [{repeat: {count: 10000, steps: [{rest: {duration: 1 s}}]}}]}\n"
        ),
        "p.yaml",
    )
    assert expanded_length(protocol.steps) == 100_001
    with pytest.raises(ProtocolError, match="expands to more than 100000 steps"):
        build_plan(protocol)


def test_build_plan_refuses_a_silly_efficiency() -> None:
    protocol, _ = load_protocol(protocol_text("  - pressure: {target: 180 kPa}\n"), "p.yaml")
    with pytest.raises(ValueError):
        build_plan(protocol, assumed_strip_efficiency=0.0)
