"""How far a measured first-cycle efficiency can sit above the cell's, given how late the strip's cut-off was seen.

The host ends a strip at the first reading at or above the cut-off; the current flowed on until that reading. On a
loaded machine at a high simulation speed a late reading is many experiment seconds, so the ICE comes out high by
up to |I| × (end of the strip − the last reading below the cut-off) / plated charge. Tests compare the simulator's
model with the interval [ICE − that excess, ICE], which is as wide as this run's own sampling made it, not with a
tolerance that a busy host can break.
"""

from __future__ import annotations

from pathlib import Path

from rig.data.store import read_events, read_samples


def ice_interval(run_dir: Path, *, cutoff_v: float = 1.0) -> tuple[float, float]:
    """(lowest ICE the cell can have had, the ICE measured) for a run of one plate and one strip."""
    db = run_dir / "run.sqlite"
    ends = [e for e in read_events(db) if e["kind"] == "step_end"]
    plate = next(e for e in ends if e["message"].startswith("plate"))
    strip = next(e for e in ends if e["message"].startswith("strip"))
    plated_c, stripped_c = float(plate["data"]["charge_c"]), float(strip["data"]["charge_c"])
    strip_i = int(strip["data"]["step"])
    below = [
        s
        for s in read_samples(db)
        if s.step_count == strip_i + 1
        and s.voltage_v is not None
        and s.voltage_v < cutoff_v
        and s.test_time_s <= strip["test_time_s"]
        and s.current_a
    ]
    last = below[-1]
    excess_c = abs(last.current_a or 0.0) * max(0.0, strip["test_time_s"] - last.test_time_s)
    return (stripped_c - excess_c) / plated_c, stripped_c / plated_c
