"""Plausible ranges of the protocol's quantities, chosen from the physics (ADR 0022).

A bound catches a unit slip (`1 GPa` for `1 kPa`, `30 Pa/min` for `30 kPa/min`, `12 m` for `12 mm`) and a value
the rig cannot make sense of; it is not a rig's limit (those are `protocols.validate.RigLimits`: pressure range,
potentiostat range and compliance, the current-density limit). Each bound is written as operators write it and
parsed with the units' own parser, so the text in a message and the value compared are one. Bounds are
inclusive, with a relative slack of 1e-9 so that `1000 ms` is `1 s` whatever the float rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from protocols.units import QUANTITY_PATTERN, Kind, Quantity, parse_quantity

__all__ = [
    "AREA",
    "CAPACITY",
    "CURRENT",
    "CURRENT_DENSITY",
    "DIAMETER",
    "DURATION",
    "PRESSURE",
    "RAMP_RATE",
    "SETTLE",
    "TIMEOUT",
    "TOLERANCE",
    "VOLTAGE",
    "Bound",
    "Limit",
    "positive_pattern",
]

_SLACK = 1e-9


@dataclass(frozen=True)
class Limit:
    """One end of a bound: its value in SI and as written."""

    si: float
    text: str


def _limit(text: str | None, kind: Kind) -> Limit | None:
    return None if text is None else Limit(parse_quantity(text, kind).si, text)


def positive_pattern() -> str:
    """The units' grammar for a value that must be positive: no sign but `+` (for the JSON Schema)."""
    return QUANTITY_PATTERN.replace("[+\\-\\u2212]?", "\\+?", 1)


@dataclass(frozen=True, eq=False)
class Bound:
    """What a quantity may be: its kinds, each with an inclusive range (None: above zero, or a rig limit's).

    The range is written as operators write it and parsed on first use (pint's registry takes most of a second to
    build: not at import).
    """

    what: str
    ranges: Mapping[Kind, tuple[str | None, str | None]]
    example: str
    note: str = ""

    @classmethod
    def of(cls, what: str, example: str, note: str = "", **ranges: tuple[str | None, str | None]) -> Bound:
        """A bound, e.g. `Bound.of("a pressure tolerance", "2 kPa", PRESSURE=("0.1 kPa", "20 kPa"))`."""
        return cls(what, {Kind[name]: span for name, span in ranges.items()}, example, note)

    @functools.cached_property
    def limits(self) -> dict[Kind, tuple[Limit | None, Limit | None]]:
        """Each kind's range in SI."""
        return {kind: (_limit(lo, kind), _limit(hi, kind)) for kind, (lo, hi) in self.ranges.items()}

    @property
    def kinds(self) -> tuple[Kind, ...]:
        """The kinds of quantity accepted."""
        return tuple(self.ranges)

    def check(self, q: Quantity) -> None:
        """Raise `ValueError` if `q` is outside its kind's range (the message says the bound)."""
        lower, upper = self.limits[q.kind]
        if upper is not None and q.si > upper.si * (1 + _SLACK):
            raise ValueError(
                f"`{q.text}` is implausibly large for {self.what} (at most {upper.text}); is the unit right?"
            )
        if lower is not None and q.si < lower.si * (1 - _SLACK):
            raise ValueError(
                f"`{q.text}` is implausibly small for {self.what} (at least {lower.text}); is the unit right?"
            )

    def describe(self) -> str:
        """For the schema: what it is, an example and its range, e.g. `a settle time, e.g. `5 min`: from 1 s ...`."""
        spans = []
        for kind, (lower, upper) in self.ranges.items():
            if lower is not None and upper is not None:
                span = f"from {lower} to {upper}"
            elif upper is not None:
                span = f"above zero, at most {upper}"
            else:
                span = "above zero"
            spans.append(f"{kind.label} {span}" if len(self.ranges) > 1 else span)
        note = f", {self.note}" if self.note else ""
        return f"{self.what}, a number and a unit, e.g. `{self.example}`: {'; or '.join(spans)}{note}"

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of the quantity as written: text matching the units' grammar (positive values only)."""
        return {
            "type": "string",
            "pattern": positive_pattern(),
            "description": self.describe(),
            "examples": [self.example],
        }


# Pressures: the rig's own range (10–250 kPa by default) is checked as well; 10 MPa is beyond any press of this
# kind (100 N on Ø10 mm is 1.3 MPa). A tolerance below 0.1 kPa asks the load cell for 0.01 N on Ø12 mm, below its
# drift (a few grams); above 20 kPa it is as loose as the swings of an unheld commercial fixture (physics notes).
PRESSURE = Bound.of("a pressure", "180 kPa", PRESSURE=(None, "10 MPa"), note="and within the rig's range")
TOLERANCE = Bound.of(
    "a pressure tolerance", "2 kPa", PRESSURE=("0.1 kPa", "20 kPa"), note="and smaller than the target"
)
# A ramp slower than 1 Pa/s takes 50 h to 180 kPa (`30 Pa/min` is a slip for kPa/min); faster than 100 kPa/s crosses
# the whole 10–250 kPa range in under 2.5 s, a few load-cell readings at 20–50 Hz: that is a step (leave `rate` out).
RAMP_RATE = Bound.of("a pressure ramp rate", "30 kPa/min", PRESSURE_RATE=("0.06 kPa/min", "6000 kPa/min"))
# Times: nothing shorter than 1 s can be recorded (readings come at 1–50 Hz); a settle longer than a day or a
# timeout longer than a week waits on nothing the paper describes; a step may last a year (self-discharge: 90 days).
SETTLE = Bound.of("a settle time", "5 min", DURATION=("1 s", "24 h"))
TIMEOUT = Bound.of("a timeout", "30 min", DURATION=("1 s", "7 d"), note="and longer than the settle time")
DURATION = Bound.of("a duration", "10 min", DURATION=("1 s", "366 d"))
# The current: its plausibility limit is the rig's (`max_current_density_ma_cm2`, 10 mA/cm² by default: twenty
# times the paper's 0.5 mA/cm²), with the potentiostat's range; an absolute current is checked through the area.
_RIG_CURRENT = "at most the rig's current-density limit (10 mA/cm² unless the rig configuration raises it)"
CURRENT_DENSITY = Bound.of("a current density", "0.5 mA/cm^2", CURRENT_DENSITY=(None, None), note=_RIG_CURRENT)
CURRENT = Bound.of(
    "a current", "0.5 mA", CURRENT=(None, None), note=_RIG_CURRENT + " on the cell's electrode, and the potentiostat's"
)
# 20 mAh/cm² is 177 µm of dense Na, twenty times the paper's plate and six times the anode for a 13 mg/cm² cathode;
# 400 mAh is that on the largest electrode (20 cm²). An absolute capacity is also checked per area, on the cell's.
CAPACITY = Bound.of(
    "a capacity",
    "1 mAh/cm^2",
    AREAL_CHARGE=(None, "20 mAh/cm^2"),
    CHARGE=(None, "400 mAh"),
    note="and at most 20 mAh/cm^2 on the cell's electrode",
)
# Below 10 mV a plate or strip ends at its first reading (Na plates and strips at tens of mV of overpotential);
# above 5 V every electrolyte here decomposes. The potentiostat's compliance (3 V by default) is checked as well.
VOLTAGE = Bound.of("a voltage limit", "1 V", VOLTAGE=("10 mV", "5 V"), note="and inside the potentiostat's compliance")
# The electrode: Ø2–50 mm (0.03–20 cm²); the rig's own electrode, when configured, must match within 2 %.
DIAMETER = Bound.of("an electrode diameter", "12 mm", LENGTH=("2 mm", "50 mm"))
AREA = Bound.of("an electrode area", "1.131 cm^2", AREA=("0.03 cm^2", "20 cm^2"))
