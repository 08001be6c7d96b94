"""Quantities as operators write them (`0.5 mA/cm^2`, `1 mAh/cm^2`, `10 min`, `180 kPa`, `1 V`), parsed with pint.

`parse_quantity("0.5 mA/cm^2", Kind.CURRENT_DENSITY)` returns the value in SI (A/m²). The text is checked against a
small grammar before pint sees it (a number, then unit names joined by `/`, `*` or `·`, each with an optional
one- or two-digit power), so no input can make pint evaluate arithmetic such as `9**9**9`. A wrong dimension is an
error that names what was written and what was expected.
"""

from __future__ import annotations

import difflib
import enum
import functools
import math
import re
from dataclasses import dataclass
from typing import Any

import pint


class UnitError(ValueError):
    """A quantity that cannot be read, or has the wrong dimension; the message says what was expected."""


@dataclass(frozen=True)
class _KindInfo:
    label: str
    si_unit: str
    example: str


class Kind(enum.Enum):
    """The kinds of quantity a protocol may hold, each with its SI unit and an example as operators write it."""

    PRESSURE = _KindInfo("a pressure", "Pa", "180 kPa")
    PRESSURE_RATE = _KindInfo("a pressure rate", "Pa/s", "10 kPa/min")
    DURATION = _KindInfo("a duration", "s", "10 min")
    CURRENT = _KindInfo("a current", "A", "0.5 mA")
    CURRENT_DENSITY = _KindInfo("a current density", "A/m^2", "0.5 mA/cm^2")
    CHARGE = _KindInfo("a capacity", "C", "1.13 mAh")
    AREAL_CHARGE = _KindInfo("an areal capacity", "C/m^2", "1 mAh/cm^2")
    VOLTAGE = _KindInfo("a voltage", "V", "1 V")
    LENGTH = _KindInfo("a length", "m", "12 mm")
    AREA = _KindInfo("an area", "m^2", "1.131 cm^2")

    @property
    def label(self) -> str:
        """What to call it in a message, e.g. `a current density`."""
        return self.value.label

    @property
    def example(self) -> str:
        """How an operator writes one."""
        return self.value.example


@dataclass(frozen=True)
class Quantity:
    """A parsed quantity: its value in SI units and its kind."""

    si: float
    kind: Kind
    text: str


# The grammar is written in the part of regular-expression syntax that Python and ECMA-262 (JSON Schema, editors)
# read alike: ASCII digits and explicit spaces rather than `\d` and `\s`, which differ between the two. The JSON
# Schema's pattern is this grammar (`protocols.bounds.positive_pattern`), so an editor and the rig agree on it.
_SPACE = r"[ \t\u00a0\u2009\u202f]"  # space, tab, no-break, thin and narrow no-break space
_EDGE = r"[ \t\r\n\u00a0\u2009\u202f]"  # also the line break a YAML block scalar ends with
_NUMBER = r"[+\-\u2212]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+\-]?[0-9]+)?"
_NAME = r"[A-Za-z_\u00b5\u03bc\u00b0\u2126][A-Za-z0-9_\u00b5\u03bc\u00b0\u2126]*"
_POWER = r"(?:(?:\^|\*\*)[+\-]?[0-9]{1,2}|[\u00b2\u00b3])"
_FACTOR = rf"{_NAME}{_POWER}?"
#: A quantity as text: a number, then unit names joined by `/`, `*` or `·`, each with an optional power.
QUANTITY_PATTERN = rf"^{_EDGE}*({_NUMBER}){_SPACE}*({_FACTOR}(?:{_SPACE}*[/*\u00b7]{_SPACE}*{_FACTOR})*){_EDGE}*$"
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_FACTOR_RE = re.compile(rf"([/*\u00b7]?){_SPACE}*({_NAME})({_POWER}?)")
_MAX_TEXT = 200


@functools.cache
def registry() -> pint.UnitRegistry:
    """The one pint registry (built on first use)."""
    return pint.UnitRegistry()


@functools.cache
def _dimensionality(kind: Kind) -> Any:
    return registry().parse_units(kind.value.si_unit).dimensionality


@functools.cache
def _si_factor(kind: Kind) -> Any:
    return registry().parse_units(kind.value.si_unit)


@functools.cache
def _unit(name: str) -> Any:
    try:
        unit = registry().parse_units(name)
    except (pint.errors.PintError, AttributeError, ValueError, TypeError, KeyError):
        return None
    return unit


_COMMON_UNITS = (
    "Pa kPa MPa bar mbar psi N/cm^2 s min h d ms A mA uA µA nA A/cm^2 mA/cm^2 uA/cm^2 A/m^2 C mC Ah mAh uAh "
    "mAh/cm^2 uAh/cm^2 C/cm^2 V mV m cm mm um µm cm^2 mm^2 m^2 kPa/min kPa/s kPa/h"
).split()


def _suggest(name: str) -> str:
    lower = {u.lower(): u for u in _COMMON_UNITS if "/" not in u and "^" not in u}
    if name.lower() in lower:
        return f"; did you mean `{lower[name.lower()]}`?"
    close = difflib.get_close_matches(name, list(lower.values()), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _kind_of(unit: Any) -> Kind | None:
    dim = unit.dimensionality
    for kind in Kind:
        if _dimensionality(kind) == dim:
            return kind
    return None


def _expected(kinds: tuple[Kind, ...]) -> str:
    return " or ".join(f"{k.label} (e.g. `{k.example}`)" for k in kinds)


def _parse_unit(text: str, shown: str) -> Any:
    unit: Any = None
    for op, name, power in _FACTOR_RE.findall(text):
        base = _unit(name)
        if base is None:
            raise UnitError(f"`{shown}`: unknown unit `{name}`{_suggest(name)}")
        exponent = 1
        if power in ("\u00b2", "\u00b3"):
            exponent = 2 if power == "\u00b2" else 3
        elif power:
            exponent = int(power.lstrip("^*"))
        factor = base**exponent
        if unit is None:
            unit = factor
        elif op == "/":
            unit = unit / factor
        else:
            unit = unit * factor
    if unit is None:  # pragma: no cover - the grammar guarantees at least one factor
        raise UnitError(f"`{shown}`: no unit")
    return unit


def parse_quantity(value: object, *kinds: Kind) -> Quantity:
    """Parse `value` (text such as `0.5 mA/cm^2`) as one of `kinds`; return it in SI. Raises `UnitError`."""
    if not kinds:
        raise ValueError("parse_quantity needs at least one expected kind")
    expected = _expected(kinds)
    if isinstance(value, bool) or value is None or not isinstance(value, (str, int, float)):
        found = "nothing" if value is None else type(value).__name__
        if isinstance(value, bool):
            found = f"`{str(value).lower()}`"
        raise UnitError(f"expected {expected}; got {found}")
    if isinstance(value, (int, float)):
        raise UnitError(f"`{value}` has no unit; expected {expected}")
    text = value
    if len(text) > _MAX_TEXT:
        raise UnitError(f"quantity text is too long ({len(text)} characters); expected {expected}")
    shown = text.strip()
    match = _QUANTITY_RE.fullmatch(text)
    if match is None:
        if re.fullmatch(rf"{_EDGE}*{_NUMBER}{_EDGE}*", text):
            raise UnitError(f"`{shown}` has no unit; expected {expected}")
        if re.match(rf"{_EDGE}*[+\-\u2212]?(?:nan|inf)", text, re.IGNORECASE):
            raise UnitError(f"`{shown}`: the value must be a finite number; expected {expected}")
        raise UnitError(f"`{shown}` is not a quantity: write a number and a unit, e.g. `{kinds[0].example}`")
    number_text, unit_text = match.groups()
    number = float(number_text.replace("\u2212", "-"))
    if not math.isfinite(number):
        raise UnitError(f"`{shown}`: the value must be a finite number")
    unit = _parse_unit(unit_text, shown)
    got = _kind_of(unit)
    if got not in kinds:
        what = got.label if got is not None else f"of dimension {unit.dimensionality}"
        raise UnitError(f"`{shown}` is {what}; expected {expected}")
    si = float((number * unit).to(_si_factor(got)).magnitude)
    if not math.isfinite(si):
        raise UnitError(f"`{shown}`: the value is out of range")
    return Quantity(si=si, kind=got, text=shown)
