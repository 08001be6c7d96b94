"""The fault matrix (issue 9): each fault scenario's test records the figure named in its row.

A test takes the `fault_figure` fixture (tests/conftest.py) and calls it once per figure, *before* asserting the
goal, so a failing row still shows what was measured:

    fault_figure(1, "motion commands during the outage", f"{pulses} pulses", goal="0", met=pulses == 0)

At the end of the session pytest prints the matrix (only the rows that ran), and when the environment variable
`RIG_FAULT_MATRIX_JSON` names a file the figures are also written there as JSON (bench/faults.py reads it and prints
the whole matrix, including rows that recorded nothing).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

ROWS: dict[int, str] = {
    1: "load cell silent for 2 s",
    2: "load cell frozen while the press moves",
    3: "NaN, inf, overrange, saturation, spike, garbage",
    4: "over-force (stiff stack)",
    5: "stepper drive timeouts / Modbus exceptions",
    6: "serial link dropped and restored",
    7: "travel limit / no contact within travel",
    8: "potentiostat timeout, SCPI error, disconnect",
    9: "kill -9 mid-step, then resume",
    10: "disk full / I/O error",
    11: "event loop blocked for 500 ms",
    12: "wall clock jumps ±1 h",
    13: "MQTT broker down for 30 s",
    14: "forged/replayed/retained/expired/unknown command",
    15: "hostile protocol YAML (fuzzed)",
    16: "set-point steps and gain changes",
    17: "actuator saturated for 60 s, then released",
    18: "tare under load, then a higher setpoint",
    19: "resume after a long pause, cell relaxed",
}

ENV_JSON = "RIG_FAULT_MATRIX_JSON"


@dataclass(frozen=True)
class Figure:
    row: int
    figure: str
    value: str
    goal: str
    met: bool
    test: str


def check_row(row: int) -> None:
    if row not in ROWS:
        raise ValueError(f"fault matrix has rows 1..{len(ROWS)}, not {row}")


def format_table(figures: list[Figure], all_rows: bool = False) -> str:
    """The matrix as a fixed-width table, one line per figure (rows without a figure shown when all_rows)."""
    by_row: dict[int, list[Figure]] = {}
    for f in figures:
        by_row.setdefault(f.row, []).append(f)
    head = f"{'#':>2}  {'fault':<48} {'figure':<44} {'measured':<30} {'goal':<14} met"
    lines = [head, "-" * len(head)]
    for row in sorted(ROWS):
        figs = by_row.get(row, [])
        if not figs:
            if all_rows:
                lines.append(f"{row:>2}  {ROWS[row]:<48} {'(no figure recorded)':<44} {'—':<30} {'':<14} NO")
            continue
        for i, f in enumerate(figs):
            name = ROWS[row] if i == 0 else ""
            num = f"{row:>2}" if i == 0 else "  "
            lines.append(f"{num}  {name:<48} {f.figure:<44} {f.value:<30} {f.goal:<14} {'yes' if f.met else 'NO'}")
    return "\n".join(lines)


def write_json(figures: list[Figure], path: str | None = None) -> None:
    target = path or os.environ.get(ENV_JSON)
    if not target:
        return
    p = Path(target)
    existing = json.loads(p.read_text()) if p.exists() and p.stat().st_size else []
    p.write_text(json.dumps(existing + [asdict(f) for f in figures], indent=1))


def read_json(path: str | Path) -> list[Figure]:
    p = Path(path)
    if not p.exists() or not p.stat().st_size:
        return []
    return [Figure(**d) for d in json.loads(p.read_text())]
