"""Every protocol in `protocols/library/` validates against the default limits and says what the paper says."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from protocols import (
    Plan,
    PlannedPlate,
    PlannedPressure,
    PlannedRest,
    PlannedStrip,
    ProtocolError,
    RigLimits,
    validate_protocol,
)
from protocols.plan import C_PER_MAH

LIBRARY = Path(__file__).resolve().parents[2] / "protocols" / "library"
PLATE_STRIP = [(e, p) for e in ("dme", "ecdmc") for p in (10, 50, 100, 180, 250)]


def plan_of(name: str, limits: RigLimits | None = None) -> Plan:
    path = LIBRARY / name
    return validate_protocol(path.read_text(encoding="utf-8"), str(path), limits)


def areal_mah(plan: Plan, coulombs: float) -> float:
    return coulombs / C_PER_MAH / (plan.electrode_area_m2 * 1e4)


def test_library_is_complete() -> None:
    names = {p.name for p in LIBRARY.glob("*.yaml")}
    expected = {f"{e}_{p}kpa_plate_strip.yaml" for e, p in PLATE_STRIP}
    expected |= {"dme_180kpa_ce_10_cycles.yaml", "ecdmc_250kpa_ce_10_cycles.yaml", "dme_180kpa_na_anode_prep.yaml"}
    assert names == expected


def test_library_ships_as_package_data() -> None:
    shipped = {p.name for p in resources.files("protocols").joinpath("library").iterdir() if p.name.endswith(".yaml")}
    assert "dme_180kpa_plate_strip.yaml" in shipped


@pytest.mark.parametrize("name", sorted(p.name for p in LIBRARY.glob("*.yaml")))
def test_every_library_protocol_validates(name: str) -> None:
    plan = plan_of(name)
    kinds = [s.kind for s in plan.steps]
    assert kinds[:3] == ["pressure", "rest", "plate"], "settle at pressure, rest with OCV, then plate"
    assert plan.electrode_area_m2 == pytest.approx(1.131e-4, rel=1e-3)
    assert plan.name and plan.cell_id and plan.operator


@pytest.mark.parametrize(("electrolyte", "kpa"), PLATE_STRIP)
def test_plate_strip_cycle(electrolyte: str, kpa: int) -> None:
    plan = plan_of(f"{electrolyte}_{kpa}kpa_plate_strip.yaml")
    assert plan.electrolyte == {"dme": "dme", "ecdmc": "ec-dmc"}[electrolyte]
    pressure, rest, plate, strip = plan.steps
    assert isinstance(pressure, PlannedPressure) and pressure.pressure_pa == kpa * 1e3
    assert isinstance(rest, PlannedRest) and rest.on_resume == "restart"
    assert isinstance(plate, PlannedPlate) and isinstance(strip, PlannedStrip)
    assert all(s.pressure_pa == kpa * 1e3 for s in plan.steps)
    # 0.5 mA/cm² to 1 mAh/cm² takes 2 h; plating current is negative, stripping positive
    assert plate.current_a / plan.electrode_area_m2 == pytest.approx(-5.0)  # A/m² = 0.5 mA/cm²
    assert strip.current_a / plan.electrode_area_m2 == pytest.approx(5.0)
    assert areal_mah(plan, plate.capacity_c or 0.0) == pytest.approx(1.0)
    assert plate.estimated_duration_s == pytest.approx(7200.0)
    assert strip.cutoff_v == 1.0 and plate.voltage_limit_v < 0
    assert plan.cycles == 1
    assert plan.max_dense_thickness_m == pytest.approx(8.86e-6)


CE = [("dme_180kpa_ce_10_cycles.yaml", 180), ("ecdmc_250kpa_ce_10_cycles.yaml", 250)]


@pytest.mark.parametrize(("name", "kpa"), CE)
def test_ce_protocols_run_ten_cycles_at_the_optimum(name: str, kpa: int) -> None:
    plan = plan_of(name)
    plates = [s for s in plan.steps if isinstance(s, PlannedPlate)]
    strips = [s for s in plan.steps if isinstance(s, PlannedStrip)]
    assert len(plates) == len(strips) == 10 and plan.cycles == 10
    assert [s.cycle for s in plates] == list(range(1, 11)) == [s.cycle for s in strips]
    assert {s.pressure_pa for s in plan.steps} == {kpa * 1e3}
    assert areal_mah(plan, plan.plated_charge_c) == pytest.approx(10.0)


def test_anode_preparation_plates_twice_the_cathode_inventory() -> None:
    plan = plan_of("dme_180kpa_na_anode_prep.yaml")
    cathode_mah_cm2 = 13e-3 * 120  # 13 mg/cm² × 120 mAh/g
    plates = [s for s in plan.steps if isinstance(s, PlannedPlate)]
    assert len(plates) == 1 and not any(isinstance(s, PlannedStrip) for s in plan.steps)
    assert areal_mah(plan, plates[0].estimated_charge_c) == pytest.approx(2 * cathode_mah_cm2)  # 3.12 mAh/cm²
    assert plates[0].current_a / plan.electrode_area_m2 == pytest.approx(-5.0)
    assert plates[0].pressure_pa == 180e3
    assert "carbon" in plan.working_electrode
    assert plan.max_dense_thickness_m == pytest.approx(3.12 * 8.86e-6)


def test_library_fails_on_a_rig_with_a_lower_ceiling() -> None:
    limits = RigLimits(max_pressure_pa=200e3)
    plan_of("dme_180kpa_plate_strip.yaml", limits)
    with pytest.raises(ProtocolError, match=r"dme_250kpa_plate_strip.yaml:\d+:\d+: `target`: 250 kPa is outside"):
        plan_of("dme_250kpa_plate_strip.yaml", limits)
