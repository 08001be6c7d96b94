"""How fast a rig that is in use refuses a second controller (issue 14 A2: exit 2 within 2 s).

A simulator runs as its own process and one `rig run --config` holds it (plating). Then each of `rig run`,
`rig resume`, `rig check` and `rig safe` on the same rig is started `--repeat` times as an operator would start
it, and timed from the process start to its exit. Printed per command: exit codes, median and worst wall time,
beside the 2 s goal and beside the baseline: starting Python and importing what the refusal imports
(`python -c "import rig.cli.run_cmd, rig.cli.safe_cmd, rig.cli.check"`), which is most of it: the refusal
itself opens no device (tests/operator/test_one_controller_per_rig.py proves that) and waits for no timeout.

    python bench/lock_refusal.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hardware_sim.control_port import control_request  # noqa: E402
from tests.sim.sim_process import sim_process  # noqa: E402
from tests.support.rig_cli import RIG  # noqa: E402

GOAL_S = 2.0
HOLDER = ROOT / "tests" / "operator" / "long_plate.yaml"
OTHER = ROOT / "tests" / "engine" / "short_protocol.yaml"


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[int, float]:
    t0 = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    return done.returncode, time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="refusals per command")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rig-lock-bench-") as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp), "XDG_DATA_HOME": str(tmp / "data")}
        with sim_process(tmp, "--speed", "20") as sim:
            cfg = str(sim.config_path)
            runs = tmp / "runs"
            holder = subprocess.Popen(
                [*RIG, "run", str(HOLDER), "--config", cfg, "--runs", str(runs)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
            )
            try:
                deadline = time.monotonic() + 120
                while control_request(sim.control, {"cmd": "state"})["state"]["current_a"] > -1e-5:
                    if holder.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit("the holding run did not start plating")
                    time.sleep(0.1)
                run_dir = next(d for d in runs.iterdir() if d.is_dir())
                commands = {
                    "rig run": [*RIG, "run", str(OTHER), "--config", cfg, "--runs", str(tmp / "refused")],
                    "rig resume": [*RIG, "resume", str(run_dir)],
                    "rig check": [*RIG, "check", "--config", cfg],
                    "rig safe": [*RIG, "safe", "--config", cfg],
                }
                imports = [sys.executable, "-c", "import rig.cli.run_cmd, rig.cli.safe_cmd, rig.cli.check"]
                rows = {"baseline: Python + imports": [_timed(imports, env) for _ in range(args.repeat)]}
                for label, cmd in commands.items():
                    rows[label] = [_timed(cmd, env) for _ in range(args.repeat)]
            finally:
                holder.terminate()
                holder.wait(120)
    print(f"refusals of a rig in use, {args.repeat} each (wall seconds, process start to exit)")
    print(f"{'command':<28} {'exit codes':<12} {'median s':>9} {'worst s':>9}   goal")
    for label, got in rows.items():
        codes = ",".join(sorted({str(rc) for rc, _ in got}))
        times = [t for _, t in got]
        goal = "" if label.startswith("baseline") else f"exit 2 within {GOAL_S:g} s"
        print(f"{label:<28} {codes:<12} {statistics.median(times):>9.2f} {max(times):>9.2f}   {goal}")


if __name__ == "__main__":
    main()
