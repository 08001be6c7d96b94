"""Quantities as operators write them, in SI; wrong dimensions say what was expected."""

from __future__ import annotations

import pytest

from protocols.units import Kind, UnitError, parse_quantity


@pytest.mark.parametrize(
    ("text", "kind", "si"),
    [
        ("0.5 mA/cm^2", Kind.CURRENT_DENSITY, 5.0),
        ("0.5 mA/cm²", Kind.CURRENT_DENSITY, 5.0),
        ("5 A/m^2", Kind.CURRENT_DENSITY, 5.0),
        ("1 mAh/cm^2", Kind.AREAL_CHARGE, 36000.0),
        ("1.131 mAh", Kind.CHARGE, 1.131 * 3.6),
        ("3.6 C", Kind.CHARGE, 3.6),
        ("10 min", Kind.DURATION, 600.0),
        ("2 h", Kind.DURATION, 7200.0),
        ("1.5e3 s", Kind.DURATION, 1500.0),
        ("180 kPa", Kind.PRESSURE, 180e3),
        ("1.8 bar", Kind.PRESSURE, 180e3),
        ("180kPa", Kind.PRESSURE, 180e3),
        ("30 kPa/min", Kind.PRESSURE_RATE, 500.0),
        ("1 V", Kind.VOLTAGE, 1.0),
        ("250 mV", Kind.VOLTAGE, 0.25),
        ("−1 V", Kind.VOLTAGE, -1.0),
        ("12 mm", Kind.LENGTH, 0.012),
        ("1.131 cm^2", Kind.AREA, 1.131e-4),
        ("565 uA", Kind.CURRENT, 565e-6),
        ("565 µA", Kind.CURRENT, 565e-6),
    ],
)
def test_operator_units_parse_to_si(text: str, kind: Kind, si: float) -> None:
    q = parse_quantity(text, kind)
    assert q.kind is kind
    assert q.si == pytest.approx(si, rel=1e-12)


def test_an_areal_or_absolute_capacity_is_told_apart() -> None:
    assert parse_quantity("1 mAh/cm^2", Kind.AREAL_CHARGE, Kind.CHARGE).kind is Kind.AREAL_CHARGE
    assert parse_quantity("1 mAh", Kind.AREAL_CHARGE, Kind.CHARGE).kind is Kind.CHARGE


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        ("0.5 mA", Kind.CURRENT_DENSITY, "`0.5 mA` is a current; expected a current density (e.g. `0.5 mA/cm^2`)"),
        ("10 m", Kind.DURATION, "`10 m` is a length; expected a duration (e.g. `10 min`)"),
        ("1 mAh", Kind.AREAL_CHARGE, "`1 mAh` is a capacity; expected an areal capacity"),
        ("1 kg", Kind.PRESSURE, "`1 kg` is of dimension [mass]; expected a pressure"),
        ("180", Kind.PRESSURE, "`180` has no unit; expected a pressure (e.g. `180 kPa`)"),
        (180, Kind.PRESSURE, "`180` has no unit"),
        (1.5, Kind.VOLTAGE, "`1.5` has no unit"),
        (True, Kind.VOLTAGE, "got `true`"),
        (None, Kind.VOLTAGE, "got nothing"),
        (["1 V"], Kind.VOLTAGE, "got list"),
        ("180 kpa", Kind.PRESSURE, "unknown unit `kpa`; did you mean `kPa`?"),
        ("10 minn", Kind.DURATION, "unknown unit `minn`"),
        ("nan kPa", Kind.PRESSURE, "must be a finite number"),
        ("inf V", Kind.VOLTAGE, "must be a finite number"),
        ("1e999 V", Kind.VOLTAGE, "must be a finite number"),
        ("kPa", Kind.PRESSURE, "is not a quantity: write a number and a unit, e.g. `180 kPa`"),
        ("1 m**9**9", Kind.LENGTH, "is not a quantity"),
        ("2**100 kPa", Kind.PRESSURE, "is not a quantity"),
        ("1 (m)", Kind.LENGTH, "is not a quantity"),
        ("x" * 500, Kind.LENGTH, "too long"),
    ],
)
def test_bad_quantities_say_what_was_expected(value: object, kind: Kind, message: str) -> None:
    with pytest.raises(UnitError) as info:
        parse_quantity(value, kind)
    assert message in str(info.value)


def test_grammar_keeps_pint_from_evaluating_arithmetic() -> None:
    # a unit power has at most two digits: no `9**9**9` can reach pint
    with pytest.raises(UnitError):
        parse_quantity("1 m^999", Kind.LENGTH)
    assert parse_quantity("1 m^2", Kind.AREA).si == 1.0
