"""The operator's view of a run: a live table on a terminal, a line every few seconds otherwise.

It shows what matters at the moments that matter: the state with its reason (why paused, why suspended, how it
ended), whether the output is on (a paused or aborted run says "off", never the last plating current), the phase
outside the steps (the pressure release after an abort), and a remaining time that counts down within a step.
"""

from __future__ import annotations

import contextlib
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from rig.run.engine import Progress


def fmt_s(seconds: float) -> str:
    """H:MM:SS."""
    seconds = max(0.0, seconds)
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def state_text(p: Progress) -> str:
    """The state, its reason and the phase, e.g. "aborted (operator abort) · releasing pressure"."""
    text = p.state.value + (f" ({p.reason})" if p.reason else "")
    return text + (f" · {p.phase}" if p.phase else "")


def current_text(p: Progress) -> str:
    """The current with the output on; "off (HIGH-Z)" otherwise."""
    if not p.output_on:
        return "off (HIGH-Z)"
    return "—" if p.current_a is None else f"{p.current_a * 1e3:+.4f} mA"


def progress_table(p: Progress) -> Table:
    """The live display."""
    t = Table.grid(padding=(0, 2))
    t.add_row("state", state_text(p), "step", f"{p.step_number}/{p.step_total} {p.step_kind} {p.step_label}")
    t.add_row("elapsed", fmt_s(p.elapsed_s), "remaining (est.)", fmt_s(p.remaining_s))
    pk = "—" if p.pressure_kpa is None else f"{p.pressure_kpa:7.2f}"
    t.add_row("pressure", f"{pk} kPa (set {p.setpoint_kpa:g})", "cycle", str(p.cycle))
    v = "—" if p.voltage_v is None else f"{p.voltage_v:+.4f} V"
    t.add_row("voltage", v, "current", current_text(p))
    t.add_row("capacity", f"{p.step_charge_c / 3.6:.4f} mAh", "", "")
    return t


class Display:
    """Rich live display on a terminal; plain log lines otherwise (at once on a change of state or phase)."""

    def __init__(self, console: Console, *, log_every_s: float = 5.0) -> None:
        self.console = console
        self.live: Live | None = None
        self._last_log = 0.0
        self._log_every_s = log_every_s
        self._last_state = ""

    def __enter__(self) -> Display:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display (a terminal that has hung up may refuse the last frame)."""
        live, self.live = self.live, None
        if live is not None:
            with contextlib.suppress(OSError):
                live.__exit__(None, None, None)

    def update(self, p: Progress) -> None:
        """Show one snapshot."""
        if self.live is not None:
            self.live.update(progress_table(p))
            return
        now = time.monotonic()
        state = state_text(p)
        if state == self._last_state and now - self._last_log < self._log_every_s:
            return
        self._last_log, self._last_state = now, state
        pk = "-" if p.pressure_kpa is None else f"{p.pressure_kpa:.2f}"
        v = "-" if p.voltage_v is None else f"{p.voltage_v:+.4f}"
        self.console.print(
            f"{fmt_s(p.elapsed_s)} {state} step {p.step_number}/{p.step_total} {p.step_kind} "
            f"P={pk} kPa (set {p.setpoint_kpa:g}) V={v} V I={current_text(p)} Q={p.step_charge_c / 3.6:.4f} mAh "
            f"remaining ~{fmt_s(p.remaining_s)}",
            highlight=False,
            soft_wrap=True,
        )
