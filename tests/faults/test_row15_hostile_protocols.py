"""Fault matrix row 15: hostile protocol YAML is rejected before start with a precise error, or gives a plan within
limits — never anything else.

≥ 10⁴ fuzzed cases (10⁵ with RIG_FAULT_LONG=1): the library protocols with random edits (tests/protocols/fuzzing.py),
plus every library protocol with each targeted hostile edit the issue names: duplicate keys, NaN and infinities,
wrong units, out-of-range pressure and YAML tags. A targeted edit must be refused, with a `FILE:LINE` position.
"""

from __future__ import annotations

import os
import random
import re
from collections import Counter
from pathlib import Path

from protocols import ProtocolError, validate_protocol
from tests.conftest import FaultFigure
from tests.protocols.fuzzing import mutate
from tests.protocols.test_properties import check_plan_consistency

LIBRARY = sorted((Path(__file__).resolve().parents[2] / "protocols" / "library").glob("*.yaml"))
CASES = 100_000 if os.environ.get("RIG_FAULT_LONG") else 10_000

# (category, pattern, replacement): applied to the first match in a library protocol
HOSTILE: list[tuple[str, str, str]] = [
    ("duplicate key", r"(?m)^operator: (.*)$", r"operator: \1\noperator: someone else"),
    ("duplicate key", r"\{target: ", "{target: 90 kPa, target: "),
    ("duplicate key", r"(?m)^(\s*)current_density: (.*)$", r"\1current_density: \2\n\1current_density: 5 mA/cm^2"),
    ("NaN / inf", r"target: [0-9.]+ kPa", "target: .nan kPa"),
    ("NaN / inf", r"target: [0-9.]+ kPa", "target: nan kPa"),
    ("NaN / inf", r"target: [0-9.]+ kPa", "target: inf kPa"),
    ("NaN / inf", r"current_density: [0-9.]+", "current_density: .inf"),
    ("NaN / inf", r"capacity: [0-9.]+", "capacity: 1e999"),
    ("wrong unit", r"target: ([0-9.]+) kPa", r"target: \1 mA"),
    ("wrong unit", r"current_density: ([0-9.]+) mA/cm\^2", r"current_density: \1 kPa"),
    ("wrong unit", r"capacity: ([0-9.]+) mAh/cm\^2", r"capacity: \1 V"),
    ("wrong unit", r"target: ([0-9.]+) kPa", r"target: \1"),
    ("pressure out of range", r"target: [0-9.]+ kPa", "target: 5 kPa"),
    ("pressure out of range", r"target: [0-9.]+ kPa", "target: 251 kPa"),
    ("pressure out of range", r"target: [0-9.]+ kPa", "target: -100 kPa"),
    ("pressure out of range", r"target: [0-9.]+ kPa", "target: 0.3 MPa"),
    ("YAML tag", r"(?m)^name: ", "name: !!python/object/apply:os.system ['echo pwned'] "),
    ("YAML tag", r"(?m)^operator: ", "operator: !!binary "),
    ("YAML tag", r"(?m)^cell:", "cell: !custom"),
    ("YAML tag", r"target: ", "target: !!float "),
]


def test_targeted_hostile_edits_are_refused_with_a_position(fault_figure: FaultFigure) -> None:
    refused: Counter[str] = Counter()
    applied: Counter[str] = Counter()
    escapes: list[str] = []
    imprecise: list[str] = []
    for path in LIBRARY:
        text = path.read_text(encoding="utf-8")
        for category, pattern, repl in HOSTILE:
            hostile, n = re.subn(pattern, repl, text, count=1)
            if not n:
                continue
            applied[category] += 1
            try:
                plan = validate_protocol(hostile, path.name)
            except ProtocolError as exc:
                refused[category] += 1
                if not all(i.mark.line >= 1 and i.message for i in exc.issues):
                    imprecise.append(f"{path.name} / {category}: {exc}")
            except Exception as exc:  # anything but a validation error is a crash
                escapes.append(f"{path.name} / {category} ({repl!r}): {type(exc).__name__}: {exc}")
            else:
                escapes.append(f"{path.name} / {category} ({repl!r}): accepted, {len(plan.steps)} steps")
    total = sum(applied.values())
    fault_figure(
        15,
        f"targeted hostile edits refused ({len(applied)} kinds)",
        f"{sum(refused.values())}/{total}; {len(imprecise)} without a line",
        goal="100 %, with FILE:LINE",
        met=not escapes and not imprecise,
    )
    assert set(applied) == {c for c, _, _ in HOSTILE}  # every category applied to at least one protocol
    assert not escapes, "\n".join(escapes[:10])
    assert not imprecise, "\n".join(imprecise[:10])


def test_fuzzed_protocols_fail_only_with_a_validation_error_or_plan_within_limits(fault_figure: FaultFigure) -> None:
    rng = random.Random(15)
    texts = [p.read_text(encoding="utf-8") for p in LIBRARY]
    valid = rejected = 0
    crashes: list[str] = []
    for _ in range(CASES):
        text = mutate(rng, rng.choice(texts))
        try:
            plan = validate_protocol(text, "fuzz.yaml")
            check_plan_consistency(plan)  # includes every pressure within 10–250 kPa
            valid += 1
        except ProtocolError:
            rejected += 1
        except Exception as exc:
            if len(crashes) < 5:
                crashes.append(f"{type(exc).__name__}: {exc}\n--- text ---\n{text!r}")
            else:
                crashes.append("")
    fault_figure(
        15,
        f"crashes other than a validation error ({CASES:,} fuzzed)",
        f"{len(crashes)} ({valid} valid plans, {rejected} refused)",
        goal="0",
        met=not crashes,
    )
    assert not crashes, "\n\n".join(c for c in crashes if c)
    assert valid > 0.02 * CASES and rejected > 0.5 * CASES  # the fuzz reaches both outcomes
