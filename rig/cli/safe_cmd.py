"""`rig safe --config RIG.toml` or `rig safe RUN`: make a rig safe when no controller is running.

For a rig whose controller died (kill -9, a crash, a power cut of the PC) while the potentiostat was sourcing. It
takes the rig's lock first (rig.device_lock: a running controller is never overridden; `rig abort` is the way to
stop that), then:
1. potentiostat: reads what it finds (output state, source level, and with the output on one reading of the
   current and voltage), reads its error history (never cleared unread), sets the output-off mode to HIGH-Z and
   switches the output off, and reads `:OUTP?` back;
2. with a run folder, counts the charge that passed since the run's last record (the current found × the time
   since that record, in experiment time) and records an event `safe` in the run's store with it; a later
   `rig resume RUN` counts that charge in the step;
3. press: holds it where it is (a move in progress is stopped), or with `--release` takes over the loaded stack
   and releases it to zero force through the pressure controller (rig.control.release: bounded in time; invalid
   load-cell data never moves the press).
It never starts or resumes a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from drivers.errors import DeviceError
from rig.clock import ExperimentClock, unix_now
from rig.config import ConfigError, RigConfig, load_config
from rig.control.controller import PressureController
from rig.control.release import ReleaseAbandoned, release_bounded
from rig.data.store import RunStore, read_last_sample
from rig.device_lock import RigLocked, lock_rig
from rig.devices import RigDevices, build_devices


@dataclass
class SafeReport:
    """What `rig safe` found and did."""

    output_was_on: bool | None = None
    source_current_a: float | None = None
    measured_current_a: float | None = None
    measured_voltage_v: float | None = None
    output_on_after: bool | None = None
    off_mode_after: str = ""
    errors_found: tuple[str, ...] = ()
    off_unix_s: float | None = None  # when the output went off (the middle of off_window_s)
    off_window_s: float = 0.0  # the window it went off in: the charge counted is uncertain by ± half of it
    unattended_s: float | None = None  # from the run's last record to the output-off (experiment seconds)
    charge_since_record_c: float | None = None
    charge_uncertainty_c: float = 0.0
    position_um: float | None = None
    was_moving: bool | None = None
    force_n: float | None = None
    released: str = ""  # what --release did
    problems: list[str] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        """True when the output was read back off and nothing failed."""
        return self.output_on_after is False and not self.problems


def _device_error(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, DeviceError) else f"{type(exc).__name__}: {exc}"


async def _switch_off(devs: RigDevices, clock: ExperimentClock, rep: SafeReport) -> None:
    pot = devs.potentiostat
    await pot.connect()
    before = await pot.safety_settings()  # reads (and so empties) the error queue: its entries are kept here
    rep.output_was_on = before.output_on
    rep.source_current_a = await pot.source_current_a()
    if before.output_on:
        with contextlib.suppress(DeviceError):  # the measurement is for the record; switching off comes first
            reading = await pot.read()
            rep.measured_current_a = reading.current_a
            rep.measured_voltage_v = reading.value_v
    earlier, (sent, answered), after = await pot.switch_off()
    # the output went off between the command going out and the instrument's next answer: the middle of that window
    rep.off_unix_s = unix_now() - (clock.now() - 0.5 * (sent + answered)) / clock.speed
    rep.off_window_s = answered - sent  # experiment seconds
    rep.errors_found = before.errors + earlier + after.errors
    rep.output_on_after = after.output_on
    rep.off_mode_after = after.output_off_mode
    if after.output_on:
        rep.problems.append(f"{pot.name}: the output still reads on after :OUTP OFF")
    elif after.output_off_mode != "HIMP":
        rep.problems.append(f"{pot.name}: the output-off mode reads {after.output_off_mode}, not HIMP")


async def _hold_press(devs: RigDevices, rep: SafeReport) -> None:
    await devs.press.connect()
    status = await devs.press.status()
    rep.was_moving = status.moving
    if status.moving:
        await devs.press.stop()
        status = await devs.press.status()
    rep.position_um = status.position_um
    await devs.force.connect()
    reading = await devs.force.read()
    rep.force_n = reading.force_n() if reading.valid else None


async def _release(
    cfg: RigConfig, devs: RigDevices, clock: ExperimentClock, rep: SafeReport, say: Callable[[str], None]
) -> None:
    ctl = PressureController.from_config(cfg, force=devs.force, press=devs.press, clock=clock)
    await ctl.start()
    try:
        held_kpa = await ctl.hold_present()
        if held_kpa is None:
            rep.released = "not needed: the press is not in contact"
            return
        say(f"press: holding the stack at {held_kpa:.1f} kPa; releasing it to zero force ...")
        last: list[float] = [clock.now()]

        def tick() -> None:
            if clock.now() - last[0] >= 10.0 * clock.speed:  # a line every 10 s of wall time
                last[0] = clock.now()
                st = ctl.status()
                shown = "—" if st.pressure_kpa is None else f"{st.pressure_kpa:.1f}"
                say(f"  {shown} kPa, position {st.position_um:.1f} µm")

        await release_bounded(ctl, clock=clock, preload_kpa=0.0, tick=tick, tick_s=0.5 * clock.speed)
        st = ctl.status()
        rep.released = f"released from {held_kpa:.1f} kPa to zero force; press backed off to {st.position_um:.1f} µm"
    except (ReleaseAbandoned, DeviceError, RuntimeError) as exc:
        rep.problems.append(f"pressure not released: {exc}")
    finally:
        await ctl.stop()
        st = ctl.status()
        rep.position_um = st.position_um
        rep.force_n = st.force_abs_n


async def make_safe(
    cfg: RigConfig, *, run_dir: Path | None, release: bool, say: Callable[[str], None]
) -> SafeReport:
    """The whole `rig safe` (the caller holds the rig's lock)."""
    clock = ExperimentClock(cfg.clock.speed)
    devs = build_devices(cfg, clock=clock)
    rep = SafeReport()
    try:
        try:
            await _switch_off(devs, clock, rep)
        except Exception as exc:
            rep.problems.append(f"{devs.potentiostat.name} ({cfg.potentiostat.resource}): {_device_error(exc)}")
        try:
            if release:
                await _release(cfg, devs, clock, rep, say)
            else:
                await _hold_press(devs, rep)
        except Exception as exc:
            rep.problems.append(f"press / load cell: {_device_error(exc)}")
    finally:
        await devs.close()
    if run_dir is not None:
        await _record(run_dir, cfg, rep)
    return rep


async def _record(run_dir: Path, cfg: RigConfig, rep: SafeReport) -> None:
    """The charge since the run's last record, and an event `safe` in the run's store."""
    db = run_dir / "run.sqlite"
    last = read_last_sample(db)
    test_time = 0.0
    if last is not None:
        off = rep.off_unix_s if rep.off_unix_s is not None else unix_now()
        rep.unattended_s = max(0.0, (off - last.unix_time_s) * cfg.clock.speed)
        test_time = last.test_time_s + rep.unattended_s
        if rep.output_was_on:
            current = rep.measured_current_a if rep.measured_current_a is not None else rep.source_current_a
            if current is not None and math.isfinite(current):
                rep.charge_since_record_c = abs(current) * rep.unattended_s
                rep.charge_uncertainty_c = abs(current) * 0.5 * rep.off_window_s
        elif rep.output_was_on is False:
            rep.charge_since_record_c = 0.0
    data: dict[str, Any] = {
        "output_was_on": rep.output_was_on,
        "source_current_a": rep.source_current_a,
        "measured_current_a": rep.measured_current_a,
        "output_on_after": rep.output_on_after,
        "errors_found": list(rep.errors_found),
        "unattended_s": rep.unattended_s,
        "charge_c": rep.charge_since_record_c,
        "charge_uncertainty_c": rep.charge_uncertainty_c,
        "position_um": rep.position_um,
        "force_n": rep.force_n,
        "released": rep.released,
        "problems": rep.problems,
    }
    store = RunStore(db, create=False)
    await store.open()
    try:
        store.event("safe", summary_line(rep), test_time_s=test_time, unix_time_s=unix_now(), data=data)
    finally:
        await store.close()


def summary_line(rep: SafeReport) -> str:
    """One line: what was found and done."""
    if rep.output_was_on is None:
        found = "potentiostat not reached"
    elif rep.output_was_on:
        shown = rep.measured_current_a if rep.measured_current_a is not None else rep.source_current_a
        found = f"output was ON ({(shown or 0.0) * 1e3:+.4g} mA), switched off into HIGH-Z"
    else:
        found = "output was off"
    after = {True: "reads ON", False: "reads off", None: "not read"}[rep.output_on_after]
    return f"rig safe: {found}; :OUTP? {after}" + (f"; problems: {'; '.join(rep.problems)}" if rep.problems else "")


def _config_of(run_dir: Path | None, config: Path | None) -> Path:
    if config is not None:
        return config
    if run_dir is None:
        raise ConfigError("give --config RIG.toml, or a run folder (its rig.toml or sim-rig.toml is used)")
    found = next((p for p in (run_dir / "rig.toml", run_dir / "sim-rig.toml") if p.exists()), None)
    if found is None:
        raise ConfigError(f"{run_dir}: no rig.toml or sim-rig.toml in the run folder; give --config RIG.toml")
    return found


def safe_command(run_dir: Path | None, config: Path | None, *, release: bool, console: Console, err: Console) -> int:
    """The whole `rig safe`: 0 when the output was read back off and nothing failed, 1 otherwise, 2 when refused."""

    def say(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    if run_dir is not None and not (run_dir / "run.sqlite").exists():
        err.print(f"rig safe: {run_dir}: not a run folder (no run.sqlite)", markup=False, highlight=False)
        return 2
    try:
        cfg_path = _config_of(run_dir, config)
        cfg = load_config(cfg_path)
    except ConfigError as exc:
        err.print(f"rig safe: {exc}", markup=False, highlight=False, soft_wrap=True)
        return 2
    try:
        lock = lock_rig(cfg, command=f"rig safe {run_dir or cfg_path}")
    except RigLocked as exc:
        err.print(
            f"rig safe: {exc}; a running controller is stopped with `rig abort`",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 2
    try:
        if run_dir is not None:
            lock.set_run_dir(run_dir)
        say(f"rig safe: {cfg.rig.name} ({cfg_path})")
        rep = asyncio.run(make_safe(cfg, run_dir=run_dir, release=release, say=say))
    finally:
        lock.release()
    for line in report_lines(rep, run_dir):
        say(line)
    for problem in rep.problems:
        err.print(f"rig safe: {problem}", markup=False, highlight=False, soft_wrap=True)
    return 0 if rep.safe else 1


def report_lines(rep: SafeReport, run_dir: Path | None) -> list[str]:
    """What was found and done, for the operator."""
    lines = []
    if rep.output_was_on is None:
        lines.append("potentiostat: not reached")
    else:
        found = "ON" if rep.output_was_on else "off"
        level = "—" if rep.source_current_a is None else f"{rep.source_current_a * 1e3:+.4f} mA"
        measured = ""
        if rep.measured_current_a is not None:
            v = "—" if rep.measured_voltage_v is None else f"{rep.measured_voltage_v:.4f} V"
            measured = f", measured {rep.measured_current_a * 1e3:+.4f} mA at {v}"
        after = {True: "ON", False: "off", None: "not read"}[rep.output_on_after]
        lines.append(
            f"potentiostat: output was {found} (source level {level}{measured}); output off into "
            f"{rep.off_mode_after or '?'}; :OUTP? reads {after}"
        )
        if rep.errors_found:
            lines.append(f"  its error history: {'; '.join(rep.errors_found)}")
    if rep.charge_since_record_c is not None and rep.unattended_s is not None:
        lines.append(
            f"  charge since the run's last record ({rep.unattended_s:.1f} s): {rep.charge_since_record_c:.6g} C "
            f"± {rep.charge_uncertainty_c:.2g} C ({rep.charge_since_record_c / 3.6:.4f} mAh)"
        )
    force = "—" if rep.force_n is None else f"{rep.force_n:.3f} N"
    position = "—" if rep.position_um is None else f"{rep.position_um:.1f} µm"
    if rep.released:
        lines.append(f"press: {rep.released}; force {force}")
    else:
        stopped = " (it was moving: stopped)" if rep.was_moving else ""
        lines.append(f"press: held where it is at {position}{stopped}; force {force}")
    if run_dir is not None:
        lines.append(f"recorded in {run_dir / 'run.sqlite'} (event 'safe')")
    return lines
