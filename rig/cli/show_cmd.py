"""`rig show RUN`: one run without exporting it: summary, steps, events and alarms, the last samples.

RUN is a run folder, or a folder name under the runs folder (`rig runs` lists them), or a unique beginning of
one. Every time printed is test time from the start of the run, as stored (the report and the BDF export give
the same numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from protocols.errors import ProtocolError
from protocols.validate import validate_protocol
from rig.cli.validate_cmd import recorded_run_limits
from rig.data.analysis import assess_deposit, load_cell_drift
from rig.data.porosity import C_PER_MAH
from rig.data.run_index import RunEntry, find_run_folders, read_entry
from rig.data.store import (
    FLAG_ENDED,
    FLAG_PAUSED,
    FLAG_RESUMED,
    FLAG_STALE,
    FLAG_SUSPENDED,
    Sample,
    StoreError,
    read_events,
    read_meta,
    read_samples,
)

__all__ = ["RunNotFound", "find_run", "show_run", "step_rows"]

_FLAG_NAMES = (
    (FLAG_PAUSED, "paused"),
    (FLAG_SUSPENDED, "suspended"),
    (FLAG_STALE, "stale"),
    (FLAG_RESUMED, "resumed"),
    (FLAG_ENDED, "ended"),
)


class RunNotFound(Exception):
    """RUN names no run folder (or more than one); the message says which and where it looked."""


def find_run(run: str, root: Path) -> Path:
    """The run folder RUN names: a path, a folder under `root` (at any depth), or a unique beginning of one."""
    path = Path(run).expanduser()
    if path.is_dir():
        return path
    folders = find_run_folders(root)
    for key in (lambda d: str(d.relative_to(root)), lambda d: d.name):
        exact = [d for d in folders if key(d) == run]
        if len(exact) == 1:
            return exact[0]
    matches = [d for d in folders if d.name.startswith(run) or str(d.relative_to(root)).startswith(run)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise RunNotFound(f"rig show: no run {run!r} in {root} (rig runs lists them; or give the run's folder)")
    names = ", ".join(sorted(d.name for d in matches)[:5]) + (", …" if len(matches) > 5 else "")
    raise RunNotFound(f"rig show: {run!r} is ambiguous in {root}: {len(matches)} runs ({names})")


def _t(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.0f}"


def _hms(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _plan_steps(text: str | None, source: str) -> tuple[list[Any], str | None]:
    """The protocol's steps (validated plan, or the raw YAML's when it no longer validates) and a problem."""
    if not text:
        return [], "the run holds no protocol"
    try:
        return list(validate_protocol(text, source, recorded_run_limits()).steps), None
    except ProtocolError as exc:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError:
            doc = None
        raw = doc.get("steps") if isinstance(doc, dict) else None
        return (list(raw) if isinstance(raw, list) else []), f"the protocol does not validate here: {exc}"


def step_rows(
    steps: Sequence[Any], events: Sequence[dict[str, Any]], *, finished: bool, last: Sample | None = None
) -> list[list[str]]:
    """One row per protocol step: number, kind, label, start and end test time, charge (mAh), how it ended
    (an unfinished step's charge so far from the last sample)."""
    starts: dict[int, float] = {}
    ends: dict[int, dict[str, Any]] = {}
    for e in events:
        i = e["data"].get("step") if isinstance(e.get("data"), dict) else None
        if not isinstance(i, int):
            continue
        if e["kind"] == "step":
            starts.setdefault(i, float(e["test_time_s"]))
        elif e["kind"] == "step_end":
            ends[i] = e
    last_t = max((float(e["test_time_s"]) for e in events), default=None)
    rows = []
    for i, step in enumerate(steps):
        kind = getattr(step, "kind", None) or (next(iter(step), "?") if isinstance(step, dict) else "?")
        label = getattr(step, "label", "") or ""
        start = starts.get(i)
        end_event = ends.get(i)
        if end_event is not None:
            end: float | None = float(end_event["test_time_s"])
            charge = f"{float(end_event['data'].get('charge_c', 0.0)) / C_PER_MAH:.4f}"
            how = str(end_event["message"]).split(": ", 1)[-1].split(";", 1)[0]
        elif start is not None:
            later = [t for j, t in starts.items() if j > i]
            end = min(later) if later else (last_t if finished else None)
            charge, how = "", "done" if later or finished else "unfinished"
            if how == "unfinished" and last is not None and last.step_count == i + 1 and last.charge_c > 0:
                charge = f"{last.charge_c / C_PER_MAH:.4f} so far"
        else:
            end, charge, how = None, "", "not reached"
        rows.append([str(i + 1), str(kind), str(label), _t(start), _t(end), charge, how])
    return rows


def _flags(flags: int) -> str:
    names = [n for bit, n in _FLAG_NAMES if flags & bit]
    rest = flags & ~sum(bit for bit, _ in _FLAG_NAMES)
    return ", ".join([*names, *([str(rest)] if rest else [])])


def _opt(v: float | None, scale: float = 1.0, fmt: str = ".3f") -> str:
    return "—" if v is None else format(v * scale, fmt)


def sample_table(samples: Sequence[Sample]) -> Table:
    """The samples given, one row each (test time from the start of the run)."""
    t = Table(title=f"last {len(samples)} samples", title_justify="left")
    for col in ("t / s", "step", "V / V", "I / mA", "P / kPa", "set / kPa", "F / N", "x / µm", "Q / mAh", "flags"):
        t.add_column(col, justify="left" if col in ("flags",) else "right")
    for s in samples:
        t.add_row(
            f"{s.test_time_s:.1f}",
            f"{s.step_count}/{s.step_index}",
            _opt(s.voltage_v, fmt=".4f"),
            _opt(s.current_a, 1e3, ".4f"),
            _opt(s.pressure_pa, 1e-3, ".2f"),
            _opt(s.setpoint_pa, 1e-3, ".1f"),
            _opt(s.force_n, fmt=".3f"),
            _opt(s.position_um, fmt=".2f"),
            f"{s.charge_c / C_PER_MAH:.4f}",
            _flags(s.flags),
        )
    return t


def _summary_table(entry: RunEntry, porosity: str, plan_problem: str | None) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    state = entry.state + (f" ({entry.reason})" if entry.reason else "")
    grid.add_row("state", state)
    if entry.resumable:
        grid.add_row("", f"rig resume {entry.folder}")
    grid.add_row("protocol", entry.protocol)
    rig = entry.rig + (f" (simulated, {entry.speed:g}x)" if entry.simulated and entry.speed else "")
    grid.add_row("rig", rig)
    grid.add_row("started", f"{entry.started} UTC" if entry.started else "—")
    if entry.last_test_time_s is not None:
        wall = ""
        if entry.last_unix_s is not None and entry.started_unix is not None:
            wall = f", {_hms(entry.last_unix_s - entry.started_unix)} wall"
        grid.add_row(
            "duration",
            f"{_hms(entry.last_test_time_s)} test time ({entry.last_test_time_s:.0f} s to the last record){wall}",
        )
    ice = "—" if entry.ice is None else f"{100 * entry.ice:.2f} %"
    avg = "—" if entry.average_ce is None else f"{100 * entry.average_ce:.2f} %"
    grid.add_row("ICE", f"{ice}   average CE {avg}")
    grid.add_row("porosity", porosity)
    grid.add_row("folder", str(entry.folder))
    for problem in (entry.problem, plan_problem):
        if problem:
            grid.add_row("problem", problem)
    return grid


def show_run(run_dir: Path, *, root: Path, console: Console, samples: int = 10) -> int:
    """Print one run (exit code: 0, or 2 when its database cannot be read)."""
    entry = read_entry(run_dir, root=root)
    db = run_dir / "run.sqlite"
    try:
        meta = read_meta(db)
        events = read_events(db)
        data = read_samples(db)
    except StoreError as exc:
        console.print(f"[bold]{entry.name}[/bold]  {entry.state}")
        console.print(f"{run_dir}: {exc}", markup=False, highlight=False)
        return 2
    text = meta.get("protocol_text")
    if text is None and (run_dir / "protocol.yaml").exists():
        text = (run_dir / "protocol.yaml").read_text(encoding="utf-8")
    steps, plan_problem = _plan_steps(text, str(run_dir / "protocol.yaml"))
    porosity = "—"
    if steps and plan_problem is None and text is not None:
        plan = validate_protocol(text, str(run_dir / "protocol.yaml"), recorded_run_limits())
        drift = load_cell_drift(meta)
        assessed = assess_deposit(data, plan, drift_n_per_sqrt_s=drift, run_state=entry.state)
        porosity = assessed.verdict.text()
    console.print(f"[bold]run {entry.name}[/bold]", highlight=False)
    console.print(_summary_table(entry, porosity, plan_problem), highlight=False)

    finished = entry.state in ("completed", "aborted", "failed")
    st = Table(title="steps (test time from the start of the run)", title_justify="left")
    for col in ("#", "kind", "label", "start / s", "end / s", "charge / mAh", "ended"):
        st.add_column(col, justify="right" if col in ("#", "start / s", "end / s", "charge / mAh") else "left")
    for row in step_rows(steps, events, finished=finished, last=data[-1] if data else None):
        st.add_row(*row)
    console.print(st, highlight=False)

    ev = Table(title=f"events and alarms ({len(events)})", title_justify="left")
    ev.add_column("t / s", justify="right")
    ev.add_column("kind")
    ev.add_column("message")
    for e in events:
        style = "red" if e["kind"] == "alarm" else None
        ev.add_row(_t(float(e["test_time_s"])), str(e["kind"]), str(e["message"]), style=style)
    console.print(ev, highlight=False)
    if samples > 0:
        console.print(sample_table(data[-samples:]), highlight=False)
    console.print(f"{len(data)} samples in all", highlight=False)
    return 0
