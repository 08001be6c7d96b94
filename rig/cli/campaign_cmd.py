"""`rig campaign FILE... --sim [--speed N] [--parallel K]`: several protocols in turn, a fresh cell for each.

Each protocol runs as its own `rig run` process (with its own simulator process, so a fresh simulated cell), at
most K at a time. At the end it prints, per electrolyte, the first-cycle efficiency against the pressure the cell
was plated and stripped at — the analogue of the paper's Fig. 1a/b. Simulated values away from the published
optima are the simulator's model, not measurements.

The runs go into one folder per campaign: `--runs DIR`, by default `campaign-<UTC time>` in the user's runs folder
(`rig.data.paths`), so `rig runs` lists them beside single runs and `rig report --campaign DIR` finds them all; each
protocol gets `NN-<file name>/` in it, holding its run folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from protocols.errors import ProtocolError
from protocols.plan import Plan, PlannedPlate, PlannedStrip
from protocols.validate import validate_protocol
from rig.cli.run_cmd import RunError, require_sim_electrolyte
from rig.cli.validate_cmd import default_limits, read_protocol_file
from rig.config import ConfigError

PAPER_OPTIMA = {"dme": (180.0, 0.882), "ec-dmc": (250.0, 0.861)}


@dataclass
class CampaignEntry:
    """One protocol of a campaign and how its run ended."""

    file: Path
    plan: Plan
    electrolyte: str
    pressure_kpa: float
    state: str = "not run"
    ice: float | None = None
    run_dir: Path | None = None
    wall_s: float = 0.0
    detail: str = ""


def _electro_pressure_kpa(plan: Plan) -> float:
    """The pressure held while plating and stripping (the first plate's)."""
    for step in plan.steps:
        if isinstance(step, PlannedPlate | PlannedStrip):
            return step.pressure_pa / 1e3
    return plan.steps[0].pressure_pa / 1e3 if plan.steps else 0.0


def _run_one(entry: CampaignEntry, *, speed: float, runs_root: Path, index: int) -> CampaignEntry:
    runs = runs_root / f"{index:02d}-{entry.file.stem}"
    runs.mkdir(parents=True, exist_ok=True)
    # a socket path is limited to ~100 bytes: a short name in the temp dir, unique to this campaign process
    sock = Path(tempfile.gettempdir()) / f"rig-campaign-{os.getpid()}-{index}.sock"
    cmd = [sys.executable, "-c", "from rig.cli.app import app; app()", "run", str(entry.file), "--sim"]
    cmd += ["--speed", str(speed), "--runs", str(runs), "--socket", str(sock)]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    entry.wall_s = time.monotonic() - t0
    dirs = sorted(d for d in runs.iterdir() if d.is_dir())
    if dirs and (dirs[-1] / "summary.json").exists():
        summary = json.loads((dirs[-1] / "summary.json").read_text())
        entry.state = summary["state"]
        entry.ice = summary["ice"]
        entry.run_dir = dirs[-1]
        entry.detail = summary.get("reason", "")
    else:
        entry.state = "failed"
        entry.detail = (out.stderr or out.stdout).strip()[-300:]
    return entry


def load_entries(files: list[Path], err: Console) -> list[CampaignEntry] | None:
    """Validate every protocol first; None (errors printed) if any is invalid."""
    entries: list[CampaignEntry] = []
    bad = False
    try:
        limits = default_limits()
    except ConfigError as exc:  # a bad RIG_RIG__* override
        err.print(str(exc), markup=False, highlight=False)
        return None
    for f in files:
        try:
            plan = validate_protocol(read_protocol_file(f), str(f), limits)
        except ProtocolError as exc:
            for issue in exc.issues:
                err.print(str(issue), markup=False, highlight=False)
            bad = True
            continue
        try:
            model = require_sim_electrolyte(plan.electrolyte, str(f))
        except RunError as exc:
            err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
            bad = True
            continue
        entries.append(CampaignEntry(f, plan, model, _electro_pressure_kpa(plan)))
    return None if bad else entries


def run_campaign(
    entries: list[CampaignEntry], *, speed: float, parallel: int, runs_root: Path, console: Console
) -> list[CampaignEntry]:
    """Run every entry (at most `parallel` at once) and return them with their results."""
    runs_root.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = [
            pool.submit(_run_one, e, speed=speed, runs_root=runs_root, index=i) for i, e in enumerate(entries, 1)
        ]
        for fut in futures:
            e = fut.result()
            ice = "—" if e.ice is None else f"{100 * e.ice:.2f} %"
            console.print(
                f"{e.file.name}: {e.state}, ICE {ice} ({e.wall_s:.0f} s wall) {e.detail}".rstrip(), highlight=False
            )
    return entries


def ice_table(entries: list[CampaignEntry]) -> list[Table]:
    """One ICE-vs-pressure table per electrolyte."""
    tables = []
    for electrolyte in sorted({e.electrolyte for e in entries}):
        rows = sorted((e for e in entries if e.electrolyte == electrolyte), key=lambda e: e.pressure_kpa)
        opt = PAPER_OPTIMA.get(electrolyte)
        title = f"ICE vs pressure, {electrolyte} (simulated; the paper's optimum: "
        title += f"{opt[1] * 100:.1f} % at {opt[0]:g} kPa)" if opt else "n/a)"
        t = Table(title=title)
        t.add_column("pressure / kPa", justify="right")
        t.add_column("ICE / %", justify="right")
        t.add_column("paper / %", justify="right")
        t.add_column("run", justify="left")
        for e in rows:
            paper = f"{opt[1] * 100:.1f}" if opt and abs(opt[0] - e.pressure_kpa) < 1e-6 else ""
            ice = "—" if e.ice is None else f"{100 * e.ice:.2f}"
            t.add_row(f"{e.pressure_kpa:g}", ice, paper, e.state)
        tables.append(t)
    return tables
