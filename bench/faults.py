"""The fault matrix of issue 9: run every fault-scenario test and print the whole matrix with its figures.

Each scenario is a system test against the simulator (with its fault injection) that records the figure named in
its matrix row through the `fault_figure` fixture; pytest marks those tests `fault_matrix`. This script runs them in
one pytest session, collects the figures as JSON and prints one table: every row, what was measured, the goal, and
whether it was met. Rows that recorded nothing are printed as such, never hidden.

    python bench/faults.py [--long] [-k EXPR] [pytest args...]

`--long` sets RIG_FAULT_LONG=1: the longer variants (more property cases, longer outages) where a test has one.
Exit status: 0 when every row recorded a figure and met its goal, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fault_matrix import ENV_JSON, ROWS, format_table, read_json  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long", action="store_true", help="run the longer variants (RIG_FAULT_LONG=1)")
    ap.add_argument("-k", dest="k", default=None, help="pytest -k expression (a subset of the matrix)")
    args, extra = ap.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="rig-faults-") as tmp:
        out = Path(tmp) / "figures.json"
        env = dict(os.environ, **{ENV_JSON: str(out)})
        if args.long:
            env["RIG_FAULT_LONG"] = "1"
        # one test at a time (-n 0): the figures are measured on a quiet machine, not beside other tests
        cmd = [sys.executable, "-m", "pytest", "-m", "fault_matrix", "-q", "-p", "no:cacheprovider", "-s", "-n", "0"]
        if args.k:
            cmd += ["-k", args.k]
        cmd += extra
        print("running:", " ".join(cmd[1:]), flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        tail = [line for line in proc.stdout.splitlines() if line.strip()][-3:]
        print("\n".join(tail))
        figures = read_json(out)
    print(
        f"\nfault matrix: {len(figures)} figures from {len({f.test for f in figures})} tests in {wall:.0f} s "
        f"(pytest exit {proc.returncode})\n"
    )
    print(format_table(figures, all_rows=True))
    rows_with = {f.row for f in figures}
    missing = sorted(set(ROWS) - rows_with)
    unmet = sorted({f.row for f in figures if not f.met})
    if missing:
        print(f"\nrows with no figure: {missing}")
    if unmet:
        print(f"rows not met: {unmet}")
    return 0 if proc.returncode == 0 and not missing and not unmet else 1


if __name__ == "__main__":
    sys.exit(main())
