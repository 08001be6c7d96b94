"""Headless logging: one JSON object per line, to the run folder and to stderr.

Everything an operator would otherwise read on the screen goes here too: engine events, remote commands (accepted
or refused), progress every few seconds, and an `error` record for a run that could not start or failed. The file
is the record; stderr (a journal under systemd) is a copy, and a stderr that has gone away (a closed terminal)
never stops the file being written.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from rig.clock import unix_now
from rig.run.engine import Progress


class JsonLog:
    """Headless logging: one JSON object per line, to the run folder and to stderr."""

    def __init__(self, path: Path, *, progress_every_s: float = 10.0) -> None:
        self._f = path.open("a", encoding="utf-8")
        self._every = progress_every_s
        self._last = 0.0
        self._stderr_ok = True

    def write(self, record: dict[str, Any]) -> None:
        """One record (with its Unix time)."""
        line = json.dumps({"unix_time_s": round(unix_now(), 3), **record}, default=str)
        self._f.write(line + "\n")
        self._f.flush()
        if self._stderr_ok:
            try:
                print(line, file=sys.stderr, flush=True)
            except OSError:  # the terminal is gone (a hang-up): the file goes on
                self._stderr_ok = False

    def event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        """An engine (or remote command) event."""
        self.write({"type": "event", "kind": kind, "message": message, **({"data": data} if data else {})})

    def error(self, message: str, **data: Any) -> None:
        """A run that could not start, or failed: the one line the operator also sees."""
        self.write({"type": "error", "message": message, **({"data": data} if data else {})})

    def progress(self, p: Progress) -> None:
        """Progress, at most every `progress_every_s` wall seconds."""
        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        self.write(
            {
                "type": "progress",
                "state": p.state.value,
                "reason": p.reason,
                "phase": p.phase,
                "step": p.step_number,
                "steps": p.step_total,
                "kind": p.step_kind,
                "cycle": p.cycle,
                "elapsed_s": round(p.elapsed_s, 3),
                "remaining_s": round(p.remaining_s, 3),
                "pressure_kpa": p.pressure_kpa,
                "setpoint_kpa": p.setpoint_kpa,
                "output_on": p.output_on,
                "voltage_v": p.voltage_v,
                "current_a": p.current_a,
                "step_charge_c": p.step_charge_c,
            }
        )

    def close(self) -> None:
        """Close the file."""
        self._f.close()
