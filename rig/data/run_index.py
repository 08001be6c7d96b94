"""`rig runs`: every run under the runs folder, newest first, with its state (docs/decisions/0024).

A run folder is a folder holding `run.sqlite`, `protocol.yaml` or `summary.json` (campaign folders are searched
too); an empty folder directly under the runs folder is listed as such. Nothing here writes, and nothing raises on
a broken folder: its problem is listed instead.

The state of a run:
- `completed`, `aborted`, `failed`: from `summary.json`, which `rig run` writes when the run has ended;
- `running`, `paused`, `suspended`: no `summary.json`, and a controller holds the rig's lock for this folder
  (rig.device_lock.run_locks: exact, the kernel drops a dead process's lock). For a run no lock file names any
  more (an older run), the store's last record (sample or event, by its Unix time) is less than `LIVE_WITHIN_S`
  old: a live controller records a sample at least every second of wall time, paused or suspended too (the
  approach too, since it is recorded; older runs wrote nothing then: after an "engaging" event the limit is
  `ENGAGE_WITHIN_S`). (File times are no help: any reader of a killed run's database checkpoints its WAL, which
  rewrites the file.)
- `killed`: no `summary.json` and no write for longer: the controller is gone (kill -9, power cut). It is
  `resumable` when the store holds step progress that did not finish, the resume cap is not reached and the
  run folder holds its rig configuration (`rig resume FOLDER`; a `--sim` run also needs its simulator, which
  waits a grace period for that);
- `starting` / `not started`: no `run.sqlite` yet, within `LIVE_WITHIN_S` of the folder's creation or after;
- `unreadable`: the run database cannot be read (the problem says why).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from rig.data.store import StoreError, StoreOverview, is_simulated_run, read_overview
from rig.device_lock import run_locks

__all__ = ["ENGAGE_WITHIN_S", "LIVE_WITHIN_S", "RunEntry", "find_run_folders", "list_runs", "read_entry"]

#: a run without summary.json whose store was written this recently (wall seconds) is taken as live
LIVE_WITHIN_S = 120.0
#: the same while its last record is the press engaging (the approach records nothing until contact)
ENGAGE_WITHIN_S = 900.0
RUN_FILES = ("run.sqlite", "protocol.yaml", "summary.json")
FINISHED = ("completed", "aborted", "failed")
_MAX_DEPTH = 4  # runs/campaign-…/NN-protocol/<run>: three levels; one to spare
_STAMP = re.compile(r"(\d{8}-\d{6})")


@dataclass(frozen=True)
class RunEntry:
    """One run folder as `rig runs` lists it."""

    folder: Path
    name: str  # the folder relative to the runs folder
    started_unix: float | None
    rig: str
    protocol: str
    state: str
    reason: str = ""
    ice: float | None = None
    average_ce: float | None = None
    resumable: bool = False
    problem: str | None = None
    simulated: bool = False
    speed: float | None = None
    samples: int = 0
    last_test_time_s: float | None = None  # the last record's test time (from the start of the run)
    last_unix_s: float | None = None

    @property
    def started(self) -> str:
        """The start as UTC date and time ("" when unknown)."""
        if self.started_unix is None:
            return ""
        return dt.datetime.fromtimestamp(self.started_unix, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")

    def as_json(self) -> dict[str, Any]:
        """The entry for `rig runs --json`: the table's fields, the unix start time and the rest."""
        d = asdict(self)
        d["folder"] = str(self.folder)
        d["started"] = self.started.replace(" ", "T") + "Z" if self.started else None  # ISO 8601, UTC
        return d


def find_run_folders(root: Path) -> list[Path]:
    """Every run folder under `root` (campaign folders included), and empty folders directly under it."""
    found: list[Path] = []

    def walk(d: Path, depth: int) -> None:
        try:
            children = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            try:
                names = {p.name for p in child.iterdir()}
            except OSError:
                names = set()
            if names & set(RUN_FILES) or (depth == 1 and not names):
                found.append(child)
            elif depth < _MAX_DEPTH:
                walk(child, depth + 1)

    if root.is_dir():
        walk(root, 1)
    return found


def list_runs(root: Path, *, now: float | None = None) -> list[RunEntry]:
    """Every run under `root`, newest first (unknown start times last)."""
    now = time.time() if now is None else now
    locks = run_locks()  # the lock files once for the whole listing
    entries = [read_entry(d, root=root, now=now, locks=locks) for d in find_run_folders(root)]
    return sorted(entries, key=lambda e: (e.started_unix is not None, e.started_unix or 0.0, e.name), reverse=True)


def _stamp_unix(folder: Path) -> float | None:
    m = _STAMP.search(folder.name)
    if m is None:
        return None
    try:
        return dt.datetime.strptime(m.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def _protocol_name(text: str | None) -> str:
    if not text:
        return "?"
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return "? (protocol.yaml does not parse)"
    name = doc.get("name") if isinstance(doc, dict) else None
    return str(name) if name else "?"


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def read_entry(
    folder: Path, *, root: Path, now: float | None = None, locks: dict[str, dict[str, Any]] | None = None
) -> RunEntry:
    """One run folder's entry; a broken folder gives an entry with its problem, never an exception. `locks`:
    `rig.device_lock.run_locks()` when the caller has read them already."""
    now = time.time() if now is None else now
    locks = run_locks() if locks is None else locks
    try:
        name = str(folder.relative_to(root))
    except ValueError:
        name = folder.name
    try:
        return _read_entry(folder, name, now, locks)
    except Exception as exc:  # a listing never stops at one folder
        return RunEntry(folder, name, _stamp_unix(folder) or _mtime(folder), "?", "?", "unreadable", problem=str(exc))


def _read_summary(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    path = folder / "summary.json"
    if not path.exists():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"summary.json cannot be read: {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("state"), str):
        return None, "summary.json holds no run state"
    return data, None


def _read_entry(folder: Path, name: str, now: float, locks: dict[str, dict[str, Any]]) -> RunEntry:
    summary, summary_problem = _read_summary(folder)
    db = folder / "run.sqlite"
    protocol_file = folder / "protocol.yaml"
    file_text = protocol_file.read_text(encoding="utf-8", errors="replace") if protocol_file.exists() else None
    started = _stamp_unix(folder) or _mtime(folder)
    if not db.exists():
        if summary is not None:
            state = str(summary["state"])
        else:
            fresh = now - (_mtime(folder) or 0.0) < LIVE_WITHIN_S
            state = "starting" if fresh else "not started"
        problem = None if state == "starting" else "no run.sqlite: the run never started (or its data is gone)"
        if not file_text and not (folder / "summary.json").exists():
            problem = "empty folder: no run data"
        return RunEntry(folder, name, started, "?", _protocol_name(file_text), state, problem=problem)
    try:
        ov = read_overview(db)
    except StoreError as exc:
        state = str(summary["state"]) if summary is not None else "unreadable"
        return RunEntry(folder, name, started, "?", _protocol_name(file_text), state, problem=str(exc))
    meta = ov.meta
    if ov.first_event is not None:
        started = float(ov.first_event["unix_time_s"])
    rig = "?"
    try:
        rig = str(json.loads(meta.get("rig_config", "{}"))["rig"]["name"])
    except (ValueError, KeyError, TypeError):
        pass
    try:
        speed: float | None = float(meta["speed"])
    except (KeyError, ValueError):
        speed = None
    last_unix = _last_unix(ov)
    common: dict[str, Any] = {
        "simulated": is_simulated_run(folder, meta),
        "speed": speed,
        "samples": ov.samples,
        "last_test_time_s": _last_test_time(ov),
        "last_unix_s": last_unix,
    }
    protocol = _protocol_name(meta.get("protocol_text") or file_text)
    if summary is not None:
        return RunEntry(
            folder,
            name,
            started,
            rig,
            protocol,
            str(summary["state"]),
            reason=str(summary.get("reason") or ""),
            ice=_opt_float(summary.get("ice")),
            average_ce=_opt_float(summary.get("average_ce")),
            problem=summary_problem,
            **common,
        )
    progress_state = None if ov.progress is None else str(ov.progress["state"])
    held = locks.get(str(folder.resolve()))  # exact: a controller holds the rig's lock for this folder, or not
    if held is not None:
        alive = bool(held)
    else:  # no lock file names it (an older run): judge by how recently the store was written
        alive = last_unix is not None and now - last_unix < _live_within_s(ov)
    if progress_state in FINISHED:
        problem = None if alive else "no summary.json: the controller stopped before writing it"
        return RunEntry(folder, name, started, rig, protocol, str(progress_state), problem=problem, **common)
    if alive:
        return RunEntry(folder, name, started, rig, protocol, progress_state or "starting", **common)
    resumable, why = _resumable(folder, ov)
    return RunEntry(
        folder,
        name,
        started,
        rig,
        protocol,
        "killed",
        reason=why,
        resumable=resumable,
        problem=summary_problem,
        **common,
    )


def _last_unix(ov: StoreOverview) -> float | None:
    times = [float(x.unix_time_s) for x in (ov.last_sample,) if x is not None]
    times += [float(e["unix_time_s"]) for e in (ov.last_event,) if e is not None]
    return max(times, default=None)


def _live_within_s(ov: StoreOverview) -> float:
    """How long the store may stay silent for a live controller: longer while the press approaches."""
    event, sample = ov.last_event, ov.last_sample
    engaging = (
        event is not None
        and event["kind"] == "pressure"
        and str(event["message"]).startswith("engaging")
        and (sample is None or sample.unix_time_s <= float(event["unix_time_s"]))
    )
    return ENGAGE_WITHIN_S if engaging else LIVE_WITHIN_S


def _last_test_time(ov: StoreOverview) -> float | None:
    times = [float(x.test_time_s) for x in (ov.last_sample,) if x is not None]
    times += [float(e["test_time_s"]) for e in (ov.last_event,) if e is not None]
    return max(times, default=None)


def _opt_float(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _resumable(folder: Path, ov: StoreOverview) -> tuple[bool, str]:
    """Whether `rig resume FOLDER` can continue the run (as far as the folder tells), and why not."""
    from rig.cli.run_cmd import MAX_AUTO_RESUMES  # the resume cap lives with `rig resume`; imported only when needed

    if ov.progress is None:
        return False, "killed before its first step: nothing to resume"
    resumes = int(ov.meta.get("resumes", "0") or 0)
    if resumes >= MAX_AUTO_RESUMES:
        return False, f"resumed {resumes} times already (the cap is {MAX_AUTO_RESUMES})"
    if not any((folder / n).exists() for n in ("rig.toml", "sim-rig.toml")):
        return False, "no rig.toml or sim-rig.toml in the run folder"
    if not (folder / "rig.toml").exists() and not _own_simulator_waits(folder / "sim-rig.toml"):
        return False, "its simulator is gone (a --sim run's simulator waits 10 min for `rig resume`, then exits)"
    return True, f"at step {int(ov.progress['step_index']) + 1}; rig resume continues it"


def _own_simulator_waits(sim_config: Path) -> bool:
    """Whether the simulator a `--sim` run started is still there (it waits a grace period for `rig resume`)."""
    from rig import simulator

    try:
        address = tomllib.loads(sim_config.read_text(encoding="utf-8"))["sim"]["control"]
        simulator.control(str(address), {"cmd": "controller"}, timeout_s=1.0)
    except (OSError, ValueError, KeyError, TypeError, simulator.SimulatorError):
        return False
    return True
