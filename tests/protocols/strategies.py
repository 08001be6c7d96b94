"""Hypothesis strategies: valid protocols with their expected SI values, and YAML text mutations."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml
from hypothesis import strategies as st

# (unit as written, factor to SI)
PRESSURE_UNITS = [("kPa", 1e3), ("Pa", 1.0), ("bar", 1e5), ("mbar", 100.0)]
RATE_UNITS = [("kPa/min", 1e3 / 60), ("kPa/s", 1e3), ("Pa/s", 1.0)]
DURATION_UNITS = [("s", 1.0), ("min", 60.0), ("h", 3600.0), ("ms", 1e-3)]
CURRENT_UNITS = [("mA", 1e-3), ("uA", 1e-6), ("µA", 1e-6), ("A", 1.0)]
DENSITY_UNITS = [("mA/cm^2", 10.0), ("A/m^2", 1.0), ("uA/cm^2", 1e-2), ("mA/cm²", 10.0)]
AREAL_UNITS = [("mAh/cm^2", 36000.0), ("uAh/cm^2", 36.0), ("C/m^2", 1.0)]
CHARGE_UNITS = [("mAh", 3.6), ("C", 1.0), ("uAh", 3.6e-3)]
VOLTAGE_UNITS = [("V", 1.0), ("mV", 1e-3)]
#: Characters of valid text: not the line breaks only YAML 1.1 sees, which the emitter may write raw and the loader
#: refuses (ADR 0022; their escapes `\N`, `\L`, `\P` in double quotes are text like any other).
TEXT = st.characters(exclude_characters="\x85\u2028\u2029", exclude_categories=("Cs",))
MAX_DENSITY_A_M2 = 100.0  # 10 mA/cm², the rig's default plausibility limit
MAX_AREAL_C_M2 = 720_000.0  # 20 mAh/cm², the bound of an areal capacity


@st.composite
def quantity(draw: st.DrawFn, lo: float, hi: float, units: list[tuple[str, float]]) -> tuple[str, float]:
    """Text for a value between lo and hi (SI), in one of `units`; and the SI value it stands for."""
    si = draw(st.floats(lo, hi, allow_nan=False, allow_infinity=False))
    unit, factor = draw(st.sampled_from(units))
    number = si / factor
    text = f"{number!r} {unit}" if draw(st.booleans()) else f"{number!r}{unit}"
    return text, float(number) * factor


@dataclass
class Expected:
    """What the plan of a generated protocol must hold, in order of the expanded steps."""

    kinds: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)  # pressure target / duration / plate charge / strip current
    plated_c: float = 0.0


@dataclass
class Generated:
    text: str
    area_m2: float
    expected: Expected


class _Gen:
    def __init__(self, draw: st.DrawFn, area_m2: float) -> None:
        self.draw = draw
        self.area_m2 = area_m2

    def pressure(self) -> tuple[dict[str, Any], list[tuple[str, float]]]:
        d = self.draw
        text, pa = d(quantity(10e3, 250e3, PRESSURE_UNITS))
        body: dict[str, Any] = {"target": text}
        if d(st.booleans()):
            body["rate"] = d(quantity(10.0, 5e3, RATE_UNITS))[0]
        if d(st.booleans()):
            body["tolerance"] = d(quantity(100.0, 5e3, PRESSURE_UNITS))[0]
        settle_s = 60.0  # the default
        if d(st.booleans()):
            body["settle"], settle_s = d(quantity(1.0, 600.0, DURATION_UNITS))
        if d(st.booleans()):  # a timeout is longer than the settle time (ADR 0022)
            body["timeout"] = d(quantity(max(60.0, 2 * settle_s), 3600.0, DURATION_UNITS))[0]
        if d(st.booleans()):
            body["on_resume"] = d(st.sampled_from(["continue", "restart", "abort"]))
        return {"pressure": body}, [("pressure", pa)]

    def own_pressure(self, body: dict[str, Any]) -> None:
        if self.draw(st.integers(0, 3)) == 0:
            body["pressure"] = self.draw(quantity(10e3, 250e3, PRESSURE_UNITS))[0]

    def timed(self, kind: str) -> tuple[dict[str, Any], list[tuple[str, float]]]:
        text, seconds = self.draw(quantity(1.0, 36000.0, DURATION_UNITS))
        body: dict[str, Any] = {"duration": text}
        self.own_pressure(body)
        if self.draw(st.booleans()):
            body["label"] = self.draw(st.text(TEXT, max_size=20))
        return {kind: body}, [(kind, seconds)]

    def current(self, body: dict[str, Any]) -> float:
        if self.draw(st.booleans()):
            text, density = self.draw(quantity(0.1, 100.0, DENSITY_UNITS))  # 0.01–10 mA/cm²
            body["current_density"] = text
            return density * self.area_m2
        # at most 10 mA/cm² on this electrode: the default current-density limit (ADR 0022)
        text, amps = self.draw(quantity(1e-6, min(50e-3, MAX_DENSITY_A_M2 * self.area_m2), CURRENT_UNITS))
        body["current"] = text
        return amps

    def plate(self) -> tuple[dict[str, Any], list[tuple[str, float]], float]:
        d = self.draw
        body: dict[str, Any] = {}
        amps = self.current(body)
        end = d(st.sampled_from(["areal", "absolute", "duration"]))
        if end == "areal":
            text, per_m2 = d(quantity(360.0, 180000.0, AREAL_UNITS))  # 0.01–5 mAh/cm²
            body["capacity"] = text
            charge = per_m2 * self.area_m2
        elif end == "absolute":  # 1 µAh – 10 mAh, at most 20 mAh/cm² on this electrode
            text, charge = d(quantity(3.6e-3, min(36.0, MAX_AREAL_C_M2 * self.area_m2), CHARGE_UNITS))
            body["capacity"] = text
        else:
            text, seconds = d(quantity(1.0, 36000.0, DURATION_UNITS))
            body["duration"] = text
            charge = amps * seconds
        if d(st.booleans()):
            body["voltage_limit"] = d(quantity(0.05, 2.9, VOLTAGE_UNITS))[0]
        if d(st.booleans()):
            body["on_resume"] = d(st.sampled_from(["continue", "abort"]))
        self.own_pressure(body)
        # keep every plate under a year (the validation's plausibility bound)
        if charge / amps > 300 * 86400:
            body.pop("capacity", None)
            body["duration"] = "1 h"
            charge = amps * 3600.0
        return {"plate": body}, [("plate", charge)], charge

    def strip(self, after_plate: bool) -> tuple[dict[str, Any], list[tuple[str, float]]]:
        d = self.draw
        body: dict[str, Any] = {}
        amps = self.current(body)
        body["cutoff"] = d(quantity(0.05, 2.9, VOLTAGE_UNITS))[0]
        if not after_plate or d(st.booleans()):
            text, charge = d(quantity(3.6e-3, min(36.0, MAX_AREAL_C_M2 * self.area_m2), CHARGE_UNITS))
            if charge / amps > 300 * 86400:
                text = f"{amps * 3600.0!r} C"
            body["capacity_limit"] = text
        if d(st.booleans()):
            body["on_resume"] = d(st.sampled_from(["continue", "restart", "abort"]))
        self.own_pressure(body)
        return {"strip": body}, [("strip", amps)]

    def steps(self, depth: int, first_pressure: bool) -> tuple[list[dict[str, Any]], list[tuple[str, float]], float]:
        d = self.draw
        out: list[dict[str, Any]] = []
        flat: list[tuple[str, float]] = []
        plated = 0.0
        n = d(st.integers(1, 5))
        previous = ""
        for i in range(n):
            choices = ["pressure", "rest", "hold", "plate", "strip"] + (["repeat"] if depth < 2 else [])
            kind = "pressure" if first_pressure and i == 0 else d(st.sampled_from(choices))
            if kind == "pressure":
                step, items = self.pressure()
            elif kind in ("rest", "hold"):
                step, items = self.timed(kind)
            elif kind == "plate":
                step, items, charge = self.plate()
                plated += charge
            elif kind == "strip":
                step, items = self.strip(after_plate=previous == "plate")
            else:
                count = d(st.integers(1, 4))
                body, body_flat, body_plated = self.steps(depth + 1, first_pressure=False)
                step = {"repeat": {"count": count, "steps": body}}
                items = body_flat * count
                plated += body_plated * count
            out.append(step)
            flat.extend(items)
            previous = kind
        return out, flat, plated


@st.composite
def valid_protocols(draw: st.DrawFn) -> Generated:
    """A valid protocol's text and what its plan must hold."""
    if draw(st.booleans()):
        mm = draw(st.floats(5.0, 25.0))
        size: dict[str, str] = {"diameter": f"{mm!r} mm"}
        area_m2 = math.pi * (mm * 1e-3 / 2) ** 2
    else:
        cm2 = draw(st.floats(0.2, 5.0))
        size = {"area": f"{cm2!r} cm^2"}
        area_m2 = cm2 * 1e-4
    gen = _Gen(draw, area_m2)
    steps, flat, plated = gen.steps(0, first_pressure=True)
    doc: dict[str, Any] = {
        "name": draw(st.text(TEXT, min_size=1, max_size=30).filter(lambda s: s.strip() != "")),
        "description": draw(st.text(TEXT, max_size=50)),
        "operator": draw(st.sampled_from(["", "lab", "Ada Lovelace"])),
        "cell": {
            "id": draw(st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)),
            "electrolyte": draw(st.sampled_from(["dme", "ec-dmc", "EC:DMC", "DME", "1 M NaPF6 in diglyme"])),
            "working_electrode": "Al foil",
            **size,
        },
        "steps": steps,
    }
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=draw(st.booleans()))
    return Generated(text, area_m2, Expected([k for k, _ in flat], [v for _, v in flat], plated))


NASTY = [
    "!!python/object:os.system ",
    "&a ",
    "*a",
    ".nan",
    "-.inf",
    "<<: ",
    "\t",
    "---\n",
    "1e999",
    "- ",
    "? ",
    "%YAML 1.1\n",
    "\x00",
    "\ufeff",
    "{",
    "[",
    "}",
    "]",
    ": ",
    "'",
    '"',
    "|\n",
    ">-\n",
    "#",
    "9**9**9 kPa",
    "-5 min",
    "0",
    "repeat: {count: 99999, steps: [{rest: {duration: 1 s}}]}",
    "yes",
    "~",
    "1:30",
    "0x1F",
    "2024-13-45",
    "\u2028",
    "\ud800",
]


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """`text` with a few random edits: characters, snippets, whole lines."""
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["char", "delete", "insert", "line_dup", "line_del", "line_swap", "truncate"]))
        n = len(text)
        if op == "char" and n:
            i = draw(st.integers(0, n - 1))
            c = draw(st.one_of(st.characters(), st.sampled_from(list(":-[]{}&*!|>#'\"\n\t %@`,.0123456789eEn"))))
            text = text[:i] + c + text[i + 1 :]
        elif op == "delete" and n:
            i = draw(st.integers(0, n - 1))
            text = text[:i] + text[i + draw(st.integers(1, 20)) :]
        elif op == "insert":
            i = draw(st.integers(0, n))
            snippet = draw(st.one_of(st.sampled_from(NASTY), st.text(max_size=10)))
            text = text[:i] + snippet + text[i:]
        elif op == "truncate" and n:
            text = text[: draw(st.integers(0, n - 1))]
        else:
            lines = text.split("\n")
            if len(lines) < 2:
                continue
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if op == "line_dup":
                lines.insert(j, lines[i])
            elif op == "line_del":
                del lines[i]
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text
