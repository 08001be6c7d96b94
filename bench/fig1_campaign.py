"""The paper's Fig. 1 campaign on the simulator: 10 cells (DME and EC:DMC at 10–250 kPa), ICE vs pressure.

Prints the ICE table per electrolyte (the simulator's model: it passes through the published optima), the wall
time, the total experiment time and the speed-up, and how well the pressure was held during plating and
stripping (p99 |P − P_set| from the controller's own readings, as stored in each run). Baseline: the goal of the
issue, the whole campaign (≈40 h of experiment time) in ≤ 5 min, i.e. ≥ 500×.

    python bench/fig1_campaign.py [--speed 1000] [--parallel 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console

from rig.cli.campaign_cmd import ice_table, load_entries, run_campaign
from rig.data.store import read_samples

LIBRARY = Path(__file__).resolve().parents[1] / "protocols" / "library"
FILES = [LIBRARY / f"{e}_{p}kpa_plate_strip.yaml" for e in ("dme", "ecdmc") for p in (10, 50, 100, 180, 250)]


def p99(values: list[float]) -> float:
    """99th percentile (nearest rank)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(0.99 * len(s)) - 1))]


def main() -> None:
    """Run the campaign and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speed", type=float, default=1000.0)
    ap.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args()
    console = Console(width=110)
    entries = load_entries(FILES, Console(stderr=True))
    assert entries is not None
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        run_campaign(entries, speed=args.speed, parallel=args.parallel, runs_root=Path(tmp), console=console)
        wall = time.monotonic() - t0
        exp_total = 0.0
        band = []
        for e in entries:
            if e.run_dir is None:
                continue
            samples = read_samples(e.run_dir / "run.sqlite")
            if samples:
                exp_total += samples[-1].test_time_s - samples[0].test_time_s
            errs = [
                abs(s.pressure_pa - s.setpoint_pa) / 1e3
                for s in samples
                if s.step_count >= 3 and s.pressure_pa is not None and s.setpoint_pa is not None
            ]
            band.append((e.file.stem, p99(errs), max(errs) if errs else float("nan")))
    for table in ice_table(entries):
        console.print(table)
    print(f"\ncells: {len(entries)}, simulator speed {args.speed:g}x, {args.parallel} at a time")
    print(f"experiment time: {exp_total / 3600:.1f} h   wall time: {wall:.0f} s ({wall / 60:.1f} min)")
    print(f"speed-up: {exp_total / wall:.0f}x    baseline goal: ≤ 300 s wall, ≥ 500x")
    print("\npressure held during plate/strip (controller readings): p99 / max |P - P_set| in kPa")
    for name, q99, mx in band:
        print(f"  {name:<28} {q99:6.2f} / {mx:6.2f}")


if __name__ == "__main__":
    main()
