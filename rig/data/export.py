"""`rig export RUN_DIR --format bdf-csv|bdf-parquet`: a run in the Battery Data Format, with a metadata sidecar.

Columns: the BDF ones first (`Test Time / s`, `Unix Time / s`, `Voltage / V`, `Current / A`, `Cycle Count / 1`,
`Step Count / 1`, `Step Index / 1`, `Applied Pressure / Pa`), then this project's own (setpoint, force, press
position, stiffness, deposit thickness, step charge, flags). The sidecar `<file>.metadata.json` (the name
`batterydf` looks for) holds the protocol, the cell, the rig, the software, the run's outcome and what each
project column means.

`Test Time / s` is test time from the start of the run: the experiment clock, which starts at 0 when `rig run`
starts the run (before the devices are connected and the press engaged, so the first sample comes some time
after 0) and runs monotonically through pauses; a resumed run continues it. The BDF's own term is "test time",
the time since the test began, which is this; the figures, `report.md` and `rig show` use the same numbers
(docs/decisions/0024). Should a stored run still hold a drop (an older run resumed before that was guaranteed),
each later segment is shifted to continue where the previous one ended, and the shift is recorded in the
sidecar; the stored data are never changed.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import rig
from rig.data.store import (
    FLAG_ENDED,
    FLAG_PAUSED,
    FLAG_RESUMED,
    FLAG_STALE,
    FLAG_SUSPENDED,
    Sample,
    is_simulated_run,
    read_events,
    read_meta,
    read_samples,
)

FORMATS = ("bdf-csv", "bdf-parquet")

BDF_COLUMNS = (
    "Test Time / s",
    "Unix Time / s",
    "Voltage / V",
    "Current / A",
    "Cycle Count / 1",
    "Step Count / 1",
    "Step Index / 1",
    "Applied Pressure / Pa",
)
PROJECT_COLUMNS: dict[str, str] = {
    "Setpoint Pressure / Pa": "pressure setpoint the controller held (ramps included)",
    "Force / N": "load-cell force, absolute (calibration referenced, not tared)",
    "Press Position / um": "press (platen) position; positive closes the press",
    "Stack Stiffness / N/um": "series stiffness of frame, spring and stack, estimated online by the controller",
    "Deposit Thickness / um": (
        "operando deposit thickness estimated live from the press position corrected for compliance and creep "
        "(rig.data.porosity); empty before enough charge has passed"
    ),
    "Step Charge / C": "charge passed in the current plate/strip step (magnitude)",
    "Flags / 1": "bit field: 1 stale load cell, 2 suspended, 4 first sample after a resume, 8 paused",
}


class ExportError(Exception):
    """The run cannot be exported; the message says why."""


@dataclass(frozen=True)
class ExportResult:
    """What was written."""

    data_path: Path
    metadata_path: Path
    rows: int
    time_drops_repaired: int


def monotonic_test_time(times: Sequence[float]) -> tuple[list[float], list[dict[str, float]]]:
    """Test time with every backward jump closed (later segments shifted); the shifts applied."""
    out: list[float] = []
    repairs: list[dict[str, float]] = []
    steps = [b - a for a, b in itertools.pairwise(times) if b > a]
    typical = statistics.median(steps) if steps else 0.0
    offset = 0.0
    for i, t in enumerate(times):
        v = t + offset
        if out and v < out[-1]:
            shift = out[-1] + typical - v
            offset += shift
            v += shift
            repairs.append({"row": float(i), "stored_test_time_s": t, "shift_s": shift})
        out.append(v)
    return out, repairs


def _opt(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


def rows_for(samples: Sequence[Sample]) -> tuple[list[str], list[list[Any]], list[dict[str, float]]]:
    """Header, rows and time repairs of the BDF table."""
    times, repairs = monotonic_test_time([s.test_time_s for s in samples])
    header = [*BDF_COLUMNS, *PROJECT_COLUMNS]
    rows: list[list[Any]] = []
    for s, t in zip(samples, times, strict=True):
        rows.append(
            [
                t,
                s.unix_time_s,
                _opt(s.voltage_v),
                0.0 if s.current_a is None else s.current_a,  # None: the output was never on (HIMP, no current)
                s.cycle,
                s.step_count,
                s.step_index,
                _opt(s.pressure_pa),
                _opt(s.setpoint_pa),
                _opt(s.force_n),
                _opt(s.position_um),
                _opt(s.stiffness_n_per_um),
                _opt(s.deposit_um),
                s.charge_c,
                s.flags,
            ]
        )
    return header, rows, repairs


def run_metadata(run_dir: Path, *, rows: int, repairs: list[dict[str, float]], fmt: str) -> dict[str, Any]:
    """The sidecar: protocol, cell, rig, software, outcome, columns."""
    db = run_dir / "run.sqlite"
    meta = read_meta(db)
    events = read_events(db)
    protocol_text = meta.get("protocol_text")
    if protocol_text is None and (run_dir / "protocol.yaml").exists():
        protocol_text = (run_dir / "protocol.yaml").read_text(encoding="utf-8")
    protocol: dict[str, Any] = {}
    if protocol_text:
        try:
            loaded = yaml.safe_load(protocol_text)
            protocol = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError:
            protocol = {}
    rig_config: Any = meta.get("rig_config")
    if isinstance(rig_config, str):
        try:
            rig_config = json.loads(rig_config)
        except json.JSONDecodeError:
            pass
    summary: dict[str, Any] = {}
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
    simulated = is_simulated_run(run_dir, meta)
    return {
        "format": "Battery Data Format (BDF)",
        "format_variant": fmt,
        "rows": rows,
        "columns": {
            "bdf": list(BDF_COLUMNS),
            "project": PROJECT_COLUMNS,
        },
        "test_time": {
            "clock": "experiment clock (monotonic; runs through pauses, scaled by the simulator speed)",
            "origin": "the start of the run (0 when rig run started it; a resumed run continues the clock)",
            "repairs": repairs,
        },
        "run": {
            "folder": run_dir.name,
            "state": summary.get("state"),
            "reason": summary.get("reason"),
            "ice": summary.get("ice"),
            "average_ce": summary.get("average_ce"),
            "cycles": summary.get("cycles"),
            "simulated": simulated,
            "speed": _maybe_json(meta.get("speed")),
            "events": [e for e in events if e["kind"] in ("state", "alarm", "resume", "suspend", "step_end")],
        },
        "protocol": {
            "name": protocol.get("name"),
            "file": meta.get("protocol_file"),
            "sha256": meta.get("protocol_sha256")
            or (hashlib.sha256(protocol_text.encode()).hexdigest() if protocol_text else None),
            "text": protocol_text,
        },
        "cell": protocol.get("cell"),
        "rig": {
            "config": rig_config,
            "potentiostat": meta.get("potentiostat"),
            "simulator": "hardware_sim (the simulator's model, not a measurement)" if simulated else None,
        },
        "software": {
            "name": "rig",
            "version": meta.get("software_version", rig.__version__),
            "exported_by": rig.__version__,
            "python": platform.python_version(),
        },
        "flags": {
            "stale": FLAG_STALE,
            "suspended": FLAG_SUSPENDED,
            "resumed": FLAG_RESUMED,
            "paused": FLAG_PAUSED,
            "ended": FLAG_ENDED,  # after the protocol: the safe state and the pressure release
        },
    }


def _maybe_json(v: str | None) -> Any:
    if v is None:
        return None
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return v


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in rows:
            w.writerow(["" if v is None else repr(v) if isinstance(v, float) else v for v in row])


def _write_parquet(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ExportError("bdf-parquet needs pyarrow: pip install 'rig[report]'") from exc
    ints = {"Cycle Count / 1", "Step Count / 1", "Step Index / 1", "Flags / 1"}
    arrays = []
    for j, name in enumerate(header):
        col = [r[j] for r in rows]
        arrays.append(pa.array(col, type=pa.int64() if name in ints else pa.float64()))
    pq.write_table(pa.Table.from_arrays(arrays, names=header), path)


def export_run(run_dir: Path, *, fmt: str = "bdf-csv", out: Path | None = None) -> ExportResult:
    """Write the run's BDF table and its metadata sidecar; returns the paths."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    db = run_dir / "run.sqlite"
    if not db.exists():
        raise ExportError(f"{run_dir}: no run.sqlite here")
    samples = read_samples(db)
    if not samples:
        raise ExportError(f"{db}: the run has no samples")
    header, rows, repairs = rows_for(samples)
    suffix = ".bdf.csv" if fmt == "bdf-csv" else ".bdf.parquet"
    data_path = out if out is not None else run_dir / "export" / f"{run_dir.name}{suffix}"
    data_path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "bdf-csv":
        _write_csv(data_path, header, rows)
    else:
        _write_parquet(data_path, header, rows)
    meta_path = data_path.with_name(data_path.name + ".metadata.json")
    meta = run_metadata(run_dir, rows=len(rows), repairs=repairs, fmt=fmt)
    meta_path.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return ExportResult(data_path, meta_path, len(rows), len(repairs))
