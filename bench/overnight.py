"""CPU share and memory growth of the `rig run` process over an overnight hold (issue 6).

Two measurements of the same `rig run --sim --headless` process (the simulator is a separate process and is not
counted):
  1. a 12 h hold, accelerated (`--speed`, default 240×: 3 min wall): the resident-memory growth over the whole
     night's samples, events and commits, and the CPU per experiment second. Accelerated, the 25 Hz control loop
     is bound by the (simulated) bus and makes far fewer cycles per experiment second than at 1×, so that CPU
     figure is a lower bound, not the real-time share;
  2. a real-time sample (speed 1) of `--realtime-min` minutes (default 10): the CPU share of one core measured
     directly, and the memory growth over it.
Goals: ≤ 5 % of one core and ≤ 5 MB growth.

    python bench/overnight.py [--hours 12] [--speed 240] [--realtime-min 10] [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_CPU_PCT = 5.0
GOAL_MEM_MB = 5.0
TICK = os.sysconf("SC_CLK_TCK")

PROTOCOL = """\
name: overnight hold
operator: bench
cell: {{id: bench, electrolyte: dme, working_electrode: Al foil, diameter: 12 mm}}
steps:
  - pressure: {{target: 180 kPa, rate: 600 kPa/min, tolerance: 3 kPa, settle: 10 s}}
  - hold: {{duration: {hours} h}}
"""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Measured:
    label: str
    wall_s: float
    exp_s: float
    cpu_s: float
    rss_start_mb: float
    rss_end_mb: float
    holds: list[str]  # the run's suspensions (state changes into suspended), whole run

    @property
    def cpu_pct_realtime(self) -> float:
        """CPU share of one core this load means at real time (CPU seconds per experiment second)."""
        return 100.0 * self.cpu_s / self.exp_s

    @property
    def growth_mb(self) -> float:
        return self.rss_end_mb - self.rss_start_mb


def measure(hours: float, speed: float, label: str, work: Path, span_wall_s: float | None = None) -> Measured:
    """Run the hold; measure from the start of the hold step for `span_wall_s` (default: 90 % of the hold)."""
    work.mkdir(parents=True, exist_ok=True)
    proto = work / "hold.yaml"
    proto.write_text(PROTOCOL.format(hours=f"{hours:g}"))
    env = os.environ.copy()
    env["XDG_RUNTIME_DIR"] = str(work / "xdg")
    (work / "xdg").mkdir(exist_ok=True)
    runs = work / "runs"
    cmd = [
        sys.executable,
        "-c",
        "from rig.cli.app import app; app()",
        "run",
        str(proto),
        "--sim",
        "--speed",
        str(speed),
        "--headless",
        "--runs",
        str(runs),
    ]
    log = (work / "rig.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        # wait for the hold step (the approach and pressure step are not the overnight load)
        deadline = time.monotonic() + 600
        while True:
            logs = list(runs.glob("*/run.log.jsonl"))
            if logs and '"step 2 hold' in logs[0].read_text():
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"rig run did not reach the hold; see {work / 'rig.log'}")
            time.sleep(0.2)
        time.sleep(min(5.0, 0.02 * hours * 3600 / speed))  # warm-up: caches, the first store pages
        t0, c0, m0 = time.monotonic(), _cpu_s(proc.pid), _rss_mb(proc.pid)
        # stop before the hold ends (the release is not the overnight load)
        span_wall = span_wall_s if span_wall_s is not None else 0.9 * hours * 3600 / speed
        end = t0 + span_wall
        while time.monotonic() < end and proc.poll() is None:
            time.sleep(min(1.0, end - time.monotonic()) if end > time.monotonic() else 0)
        t1, c1, m1 = time.monotonic(), _cpu_s(proc.pid), _rss_mb(proc.pid)
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: the safe stop
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()
    return Measured(label, t1 - t0, (t1 - t0) * speed, c1 - c0, m0, m1, _holds(runs))


def _holds(runs: Path) -> list[str]:
    """Why the run was suspended, one entry per suspension (state events into `suspended`)."""
    from rig.data.store import read_events

    dbs = list(runs.glob("*/run.sqlite"))
    if not dbs:
        return []
    found = []
    for e in read_events(dbs[0]):
        msg = str(e["message"])
        if e["kind"] == "state" and "-> suspended" in msg:
            found.append(msg.split(":", 1)[1].strip() if ":" in msg else msg)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=12.0, help="accelerated hold length (experiment hours)")
    ap.add_argument("--speed", type=float, default=240.0, help="simulator speed for the accelerated hold")
    ap.add_argument("--realtime-min", type=float, default=10.0, help="real-time sample length (minutes)")
    ap.add_argument("--quick", action="store_true", help="1 h hold at 240x and a 1 min real-time sample")
    args = ap.parse_args()
    hours, rt_min = (1.0, 1.0) if args.quick else (args.hours, args.realtime_min)
    with tempfile.TemporaryDirectory(prefix="rig-overnight-") as tmp:
        acc = measure(hours, args.speed, f"{hours:g} h hold at {args.speed:g}x", Path(tmp) / "acc")
        rt = measure(rt_min / 60 + 0.1, 1.0, f"{rt_min:g} min at 1x", Path(tmp) / "rt", span_wall_s=rt_min * 60)
    print("rig run --headless, the rig process only (the simulator is another process)")
    print(
        f"{'measurement':<26} {'wall s':>8} {'exp s':>9} {'CPU s':>8} {'CPU % (1x)':>11} {'goal':>6} "
        f"{'RSS MB':>8} {'growth MB':>10} {'goal':>6}"
    )
    for m in (acc, rt):
        print(
            f"{m.label:<26} {m.wall_s:8.1f} {m.exp_s:9.0f} {m.cpu_s:8.2f} {m.cpu_pct_realtime:11.2f} "
            f"{'≤ ' + format(GOAL_CPU_PCT, 'g'):>6} {m.rss_end_mb:8.1f} {m.growth_mb:10.2f} "
            f"{'≤ ' + format(GOAL_MEM_MB, 'g'):>6}"
        )
    for m in (acc, rt):
        causes = Counter(h.split(" for ")[0] for h in m.holds)
        said = ", ".join(f"{n}× {c}" for c, n in causes.most_common()) or "none"
        print(f"holds in the {m.label} run: {len(m.holds)} ({said})")
        for h in m.holds:
            print(f"  {h}")
    print("CPU % (1x): CPU seconds per experiment second x 100. At 1x it is the measured share of one core;")
    print("accelerated, the control loop is bus-bound (fewer cycles per experiment second): a lower bound only.")


if __name__ == "__main__":
    main()
