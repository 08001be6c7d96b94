"""`rig run FILE [--config CFG] [--sim] [--speed N]`: validate, connect, run with the pressure held, report CE."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

import rig
from protocols.errors import ProtocolError
from protocols.plan import Plan
from protocols.validate import validate_protocol
from rig.clock import ExperimentClock, unix_now
from rig.config import RigConfig, load_config
from rig.devices import build_devices
from rig.engine import Progress, ResumePoint, RunEngine, RunResult, RunState
from rig.operator_socket import OperatorSocket, default_socket
from rig.pressure_controller import ControllerSettings, PressureController
from rig.run_telemetry import Handler, run_snapshot, run_telemetry
from rig.sd_notify import notify, watchdog_interval_s
from rig.store import RunStore, read_events, read_last_sample, read_meta, read_progress
from rig.supervisor import SupervisorSettings
from rig.validate_cmd import default_limits, limits_from_config

EXIT_INVALID = 2
EXIT_FAILED = 1
DEFAULT_SIM_SPEED = 500.0
SAMPLE_PERIOD_S = 0.25  # experiment seconds between stored samples (and progress rows)
MAX_AUTO_RESUMES = 3
MAX_PAGES_ENV = "RIG_STORE_MAX_PAGES"  # test hook: cap the database size so SQLite reports "disk full"
FINISHED_STATES = ("completed", "aborted", "failed")


def store_batch_s(speed: float) -> float:
    """Commit often enough that at most ~0.4 s of experiment time waits in memory (at most 1 s, at least 20 ms wall)."""
    return max(0.02, min(1.0, 0.4 / speed))


def controller_settings(speed: float) -> ControllerSettings:
    """The same floor for the controller's own stale flag: from 50x its period floor is 0.15 s of wall time (stale
    after 2 periods = 0.3 s wall), or a starved CPU flags the load cell stale so often that a pressure step's settle
    time never completes (a 500x run stood in its pressure step for hours of experiment time). 1x is unchanged."""
    return ControllerSettings(period_floor_wall_s=0.15 if speed >= 50 else 0.02)


def supervisor_settings(speed: float) -> SupervisorSettings:
    """At high simulation speeds a starved CPU (parallel runs on a small machine) cannot keep 2 controller
    periods of experiment time in wall time: the stale floor becomes 0.3 s wall from 50x up."""
    fast = speed >= 50
    return SupervisorSettings(min_stale_wall_s=0.3 if fast else 0.04, silent_wall_s=0.3 if fast else 0.1)


def sample_period_s(speed: float) -> float:
    """0.25 experiment seconds between samples, but no faster than one per 5 ms wall (accelerated simulation)."""
    return min(1.0, max(SAMPLE_PERIOD_S, 0.005 * speed))


class JsonLog:
    """Headless logging: one JSON object per line, to the run folder and to stderr."""

    def __init__(self, path: Path, *, progress_every_s: float = 10.0) -> None:
        self._f = path.open("a", encoding="utf-8")
        self._every = progress_every_s
        self._last = 0.0

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({"unix_time_s": round(unix_now(), 3), **record}, default=str)
        self._f.write(line + "\n")
        self._f.flush()
        print(line, file=sys.stderr, flush=True)

    def event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        self.write({"type": "event", "kind": kind, "message": message, **({"data": data} if data else {})})

    def progress(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        self.write(
            {
                "type": "progress",
                "state": p.state.value,
                "step": p.step_number,
                "steps": p.step_total,
                "kind": p.step_kind,
                "cycle": p.cycle,
                "elapsed_s": round(p.elapsed_s, 3),
                "pressure_kpa": p.pressure_kpa,
                "setpoint_kpa": p.setpoint_kpa,
                "voltage_v": p.voltage_v,
                "current_a": p.current_a,
                "step_charge_c": p.step_charge_c,
            }
        )

    def close(self) -> None:
        self._f.close()


class RunError(Exception):
    """The run could not start; the message says why."""


def sim_electrolyte(text: str) -> str | None:
    """The simulator's model for a protocol's electrolyte text: "dme" (ethers), "ec-dmc" (carbonates) or None."""
    low = text.lower()
    tokens = set(re.split(r"[^a-z0-9]+", low))
    letters = re.sub(r"[^a-z]", "", low)
    if "ecdmc" in letters or "carbonate" in low or tokens & {"ec", "dmc", "pc", "emc", "dec"}:
        return "ec-dmc"
    if "dme" in tokens or "glyme" in low or "ether" in low:
        return "dme"
    return None


def electrolyte_key(text: str) -> str:
    """Group runs by electrolyte: the simulator's name (dme or ec-dmc) where it has a model, else the text itself."""
    return sim_electrolyte(text) or text.strip()


def require_sim_electrolyte(text: str, source: str) -> str:
    """The simulator's model for `text`, or a RunError naming the protocol file and the value."""
    key = sim_electrolyte(text)
    if key is None:
        raise RunError(
            f"{source}: cell.electrolyte {text!r}: the simulator models an ether (DME) and a carbonate (EC:DMC) "
            "electrolyte only; name one of them (e.g. 'dme' or 'ec-dmc')"
        )
    return key


def make_run_dir(root: Path, plan: Plan) -> Path:
    """A new folder for one run: runs/<UTC time>-<protocol name>."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", plan.name).strip("-").lower()[:40] or "run"
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = root / f"{stamp}-{slug}"
    n = 1
    while path.exists():
        n += 1
        path = root / f"{stamp}-{slug}-{n}"
    path.mkdir(parents=True)
    return path


@dataclass
class SimHandle:
    """A simulator process started for this run."""

    proc: subprocess.Popen[bytes]
    config_path: Path
    endpoints: dict[str, str]


@contextlib.contextmanager
def start_simulator(run_dir: Path, *, speed: float, electrolyte: str, diameter_mm: float) -> Iterator[SimHandle]:
    """Run the simulator as its own process for this run (its timing stays honest); stop it afterwards."""
    ready = run_dir / "sim-ready.json"
    config = run_dir / "sim-rig.toml"
    log = (run_dir / "sim.log").open("wb")
    cmd = [
        sys.executable,
        "-m",
        "hardware_sim",
        "--speed",
        str(speed),
        "--electrolyte",
        electrolyte,
        "--electrode-diameter-mm",
        f"{diameter_mm:.4f}",
        "--config-out",
        str(config),
        "--ready-file",
        str(ready),
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30.0
        while not ready.exists():
            if proc.poll() is not None:
                raise RunError(f"the simulator exited ({proc.returncode}); see {run_dir / 'sim.log'}")
            if time.monotonic() > deadline:
                raise RunError(f"the simulator did not start within 30 s; see {run_dir / 'sim.log'}")
            time.sleep(0.05)
        yield SimHandle(proc, config, json.loads(ready.read_text()))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def _fmt_s(seconds: float) -> str:
    seconds = max(0.0, seconds)
    h, rem = divmod(int(seconds), 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}"


def progress_table(p: Progress) -> Table:
    """The live display."""
    t = Table.grid(padding=(0, 2))
    t.add_row("state", p.state.value, "step", f"{p.step_number}/{p.step_total} {p.step_kind} {p.step_label}")
    t.add_row("elapsed", _fmt_s(p.elapsed_s), "remaining (est.)", _fmt_s(p.remaining_s))
    pk = "—" if p.pressure_kpa is None else f"{p.pressure_kpa:7.2f}"
    t.add_row("pressure", f"{pk} kPa (set {p.setpoint_kpa:g})", "cycle", str(p.cycle))
    v = "—" if p.voltage_v is None else f"{p.voltage_v:+.4f} V"
    i = "—" if p.current_a is None else f"{p.current_a * 1e3:+.4f} mA"
    t.add_row("voltage", v, "current", i)
    t.add_row("capacity", f"{p.step_charge_c / 3.6:.4f} mAh", "", "")
    return t


class _Display:
    """Rich live display on a terminal; plain log lines otherwise."""

    def __init__(self, console: Console, *, log_every_s: float = 5.0) -> None:
        self.console = console
        self.live: Live | None = None
        self._last_log = 0.0
        self._log_every_s = log_every_s

    def __enter__(self) -> _Display:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def update(self, p: Progress) -> None:
        if self.live is not None:
            self.live.update(progress_table(p))
            return
        now = time.monotonic()
        if now - self._last_log >= self._log_every_s:
            self._last_log = now
            pk = "-" if p.pressure_kpa is None else f"{p.pressure_kpa:.2f}"
            v = "-" if p.voltage_v is None else f"{p.voltage_v:+.4f}"
            self.console.print(
                f"{_fmt_s(p.elapsed_s)} {p.state.value} step {p.step_number}/{p.step_total} {p.step_kind} "
                f"P={pk} kPa (set {p.setpoint_kpa:g}) V={v} V Q={p.step_charge_c / 3.6:.4f} mAh",
                highlight=False,
            )


@contextlib.asynccontextmanager
async def _signals(engine: RunEngine) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    handled = (signal.SIGINT, signal.SIGTERM)
    tasks: set[asyncio.Task[Any]] = set()

    def on_signal(sig: signal.Signals) -> None:
        t = loop.create_task(engine.abort(f"signal {sig.name}: safe stop"))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await asyncio.gather(*tasks, return_exceptions=True)


def _fan_out(
    sinks: list[Callable[[str, str, dict[str, Any]], None]], kind: str, message: str, data: dict[str, Any]
) -> None:
    for sink in sinks:
        sink(kind, message, data)


async def execute(
    plan: Plan,
    cfg: RigConfig,
    *,
    run_dir: Path,
    protocol_text: str,
    console: Console,
    socket_path: Path | None = None,
    headless: bool = False,
    resume: ResumeInfo | None = None,
) -> RunResult:
    """Connect the rig, hold pressure, run the plan, and record everything in `run_dir`."""
    clock = ExperimentClock(cfg.clock.speed, offset_s=resume.test_time_s if resume is not None else 0.0)
    devs = build_devices(cfg, clock=clock)
    try:
        controller = PressureController.from_config(
            cfg, force=devs.force, press=devs.press, clock=clock, settings=controller_settings(cfg.clock.speed)
        )
    except ValueError as exc:  # an inconsistent configuration (e.g. the hard limit below the maximum setpoint)
        await devs.close()
        raise RunError(f"rig configuration: {exc}") from None
    engine_box: list[RunEngine] = []
    max_pages = os.environ.get(MAX_PAGES_ENV)
    store = RunStore(
        run_dir / "run.sqlite",
        create=resume is None,
        batch_s=store_batch_s(cfg.clock.speed),
        on_error=lambda why: engine_box[0].storage_error(why) if engine_box else None,
        on_recover=lambda: engine_box[0].storage_recovered() if engine_box else None,
        max_page_count=int(max_pages) if max_pages else None,
    )
    await store.open()
    jlog = JsonLog(run_dir / "run.log.jsonl") if headless else None
    # engine events go to the JSON log (headless) and to the broker (when telemetry is configured)
    event_sinks: list[Callable[[str, str, dict[str, Any]], None]] = [jlog.event] if jlog is not None else []
    display = _Display(console)
    engine = RunEngine(
        plan=plan,
        potentiostat=devs.potentiostat,
        controller=controller,
        clock=clock,
        voltage_compliance_v=cfg.potentiostat.voltage_limit_v,
        store=store,
        sample_period_s=sample_period_s(cfg.clock.speed),
        on_progress=jlog.progress if jlog is not None else display.update,
        on_event=lambda kind, message, data: _fan_out(event_sinks, kind, message, data),
        resume_from=None if resume is None else resume.point,
        supervisor=supervisor_settings(cfg.clock.speed),
    )
    engine_box.append(engine)
    sock = OperatorSocket(
        socket_path or default_socket(cfg.rig.name),
        {
            "pause": engine.pause,
            "resume": engine.resume,
            "abort": engine.abort,
            "ack": engine.ack,
            "status": engine.status,
        },
    )
    watchdog: asyncio.Task[None] | None = None
    try:
        if resume is None:
            await store.set_meta(
                {
                    "protocol_text": protocol_text,
                    "protocol_sha256": hashlib.sha256(protocol_text.encode()).hexdigest(),
                    "protocol_file": plan.source_file,
                    "rig_config": cfg.model_dump(mode="json"),
                    "software_version": rig.__version__,
                    "speed": cfg.clock.speed,
                    "resumes": 0,
                }
            )
        else:
            await store.set_meta({"resumes": resume.point.resumes})
        await sock.start()
        # the potentiostat first: its power-on output-off state (NORMAL) would short the cell until HIMP is set
        await devs.potentiostat.connect()
        safety = await devs.potentiostat.verify_safe(cfg.potentiostat.voltage_limit_v)
        if resume is not None:
            await _readback_after_crash(engine, devs.potentiostat, safety.output_on, resume, cfg.clock.speed)
        ident = await devs.potentiostat.identify()
        await controller.start()
        await store.set_meta({"potentiostat": f"{ident.vendor} {ident.model} {ident.serial} {ident.firmware}"})
        notify("READY=1")
        interval = watchdog_interval_s()
        if interval is not None:
            watchdog = asyncio.get_running_loop().create_task(_watchdog(controller, interval), name="sd-watchdog")

        def record_remote(kind: str, message: str, data: dict[str, Any]) -> None:
            store.event(kind, message, test_time_s=clock.now(), unix_time_s=unix_now(), data=data)

        remote: dict[str, Handler] = {
            "pause": engine.pause,
            "resume": engine.resume,
            "abort": engine.abort,
            "ack": engine.ack,
        }
        with contextlib.nullcontext() if headless else display:
            async with (
                _signals(engine),
                run_telemetry(
                    cfg,
                    snapshot=lambda: run_snapshot(engine.progress(), controller.status()),
                    handlers=remote,
                    record_event=record_remote,
                ) as link,
            ):
                if link is not None:
                    event_sinks.append(link.publish_event)
                result = await engine.run()
        return result
    finally:
        notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        with contextlib.suppress(Exception):
            await controller.stop()
        await devs.close()
        await sock.close()
        await store.close()
        if jlog is not None:
            jlog.close()


async def _watchdog(controller: PressureController, interval_s: float) -> None:
    """systemd watchdog: ping only while the control loop is alive (its cycle count advances)."""
    last = -1
    while True:
        cycles = controller.status().cycles
        if cycles != last:
            notify("WATCHDOG=1")
            last = cycles
        await asyncio.sleep(interval_s)


@dataclass(frozen=True)
class ResumeInfo:
    """A killed run's state from its store."""

    point: ResumePoint
    test_time_s: float
    last_unix_s: float
    step_current_a: float | None


async def _readback_after_crash(engine: RunEngine, pot: Any, output_on: bool, resume: ResumeInfo, speed: float) -> None:
    """Hardware truth beats saved state: a current still flowing is switched off and its charge counted."""
    if not output_on:
        engine.record_event("resume", "hardware readback: the output was off")
        return
    reading = await pot.read()
    t_off_unix = unix_now()  # the instrument switches off as the command arrives
    await pot.output(False)
    dead_s = max(0.0, (t_off_unix - resume.last_unix_s) * speed)
    extra = abs(reading.current_a) * dead_s if resume.step_current_a is not None else 0.0
    engine.add_resume_charge(extra)
    engine.record_event(
        "resume",
        f"hardware readback: the output was still on at {reading.current_a:.6g} A; switched off; "
        f"{extra:.6g} C passed in the {dead_s:.3f} s without a controller",
        current_a=reading.current_a,
        dead_s=dead_s,
        extra_charge_c=extra,
    )


def print_result(console: Console, plan: Plan, result: RunResult, run_dir: Path) -> None:
    """Print how the run ended and its coulombic efficiencies."""
    colour = {RunState.COMPLETED: "green", RunState.ABORTED: "yellow"}.get(result.state, "red")
    console.print(f"[{colour}]run {result.state.value}[/{colour}] {result.reason}".rstrip())
    table = Table(title=f"coulombic efficiency: {plan.name}")
    table.add_column("cycle", justify="right")
    table.add_column("plated / mAh", justify="right")
    table.add_column("stripped / mAh", justify="right")
    table.add_column("CE / %", justify="right")
    for cycle, pair in sorted(result.ledger.pairs.items()):
        ce = "—" if pair.ce is None else f"{100 * pair.ce:.2f}"
        table.add_row(str(cycle), f"{pair.plated_c / 3.6:.4f}", f"{pair.stripped_c / 3.6:.4f}", ce)
    console.print(table)
    if result.ice is not None:
        console.print(f"ICE (first-cycle coulombic efficiency): {100 * result.ice:.2f} %")
    if result.average_ce is not None:
        console.print(f"average CE over {len(result.ledger.efficiencies())} cycle(s): {100 * result.average_ce:.2f} %")
    console.print(f"run data: {run_dir}")


def run_command(
    file: Path,
    *,
    config: Path | None,
    sim: bool,
    speed: float | None,
    runs_root: Path,
    console: Console,
    err: Console,
    socket_path: Path | None = None,
    headless: bool = False,
    resume_unfinished: bool = False,
) -> int:
    """The whole `rig run`: returns the exit code."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"{file}:1:1: cannot read the protocol: {exc}", markup=False, highlight=False)
        return EXIT_INVALID
    cfg: RigConfig | None = None
    if config is not None:
        try:
            cfg = load_config(config)
        except Exception as exc:
            err.print(str(exc), markup=False, highlight=False)
            return EXIT_INVALID
    elif not sim:
        err.print("give --config CFG for a real rig, or --sim to run on the simulator", highlight=False)
        return EXIT_INVALID
    limits = limits_from_config(cfg) if cfg is not None else default_limits()
    try:
        plan = validate_protocol(text, str(file), limits)
    except ProtocolError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False, highlight=False, soft_wrap=True)
        return EXIT_INVALID
    unfinished = find_unfinished(runs_root, hashlib.sha256(text.encode()).hexdigest())
    if unfinished is not None:
        if resume_unfinished:
            err.print(f"resuming the unfinished run {unfinished}", highlight=False)
            return resume_command(unfinished, console=console, err=err, socket_path=socket_path, headless=headless)
        err.print(
            f"note: {unfinished} is an unfinished run of this protocol; continue it with "
            f"`rig resume {unfinished}` (or `rig run --resume-unfinished`); starting a new run",
            highlight=False,
        )
    if sim:
        try:
            sim_model = require_sim_electrolyte(plan.electrolyte, str(file))
        except RunError as exc:
            err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
            return EXIT_INVALID
    run_dir = make_run_dir(runs_root, plan)
    (run_dir / "protocol.yaml").write_text(text, encoding="utf-8")
    console.print(f"run folder: {run_dir}", highlight=False)
    try:
        if sim:
            sim_speed = speed or DEFAULT_SIM_SPEED
            diameter_mm = 2 * (plan.electrode_area_m2 / 3.141592653589793) ** 0.5 * 1e3
            with start_simulator(run_dir, speed=sim_speed, electrolyte=sim_model, diameter_mm=diameter_mm) as handle:
                sim_cfg = load_config(handle.config_path)
                try:  # the simulated rig's own limits (with any RIG_* overrides) apply, as a real rig's would
                    plan = validate_protocol(text, str(file), limits_from_config(sim_cfg))
                except ProtocolError as exc:
                    for issue in exc.issues:
                        err.print(str(issue), markup=False, highlight=False, soft_wrap=True)
                    return EXIT_INVALID
                console.print(f"simulator at {sim_speed:g}x: {', '.join(handle.endpoints.values())}", highlight=False)
                result = asyncio.run(_execute_checked(plan, sim_cfg, run_dir, text, console, socket_path, headless))
        else:
            assert cfg is not None
            if speed is not None and speed != 1.0:
                err.print("--speed applies to --sim only: a real rig runs in real time", highlight=False)
                return EXIT_INVALID
            shutil.copy(config, run_dir / "rig.toml")  # type: ignore[arg-type]
            result = asyncio.run(_execute_checked(plan, cfg, run_dir, text, console, socket_path, headless))
    except RunError as exc:
        err.print(str(exc), highlight=False, soft_wrap=True)
        return EXIT_FAILED
    return _finish(console, plan, result, run_dir)


def _finish(console: Console, plan: Plan, result: RunResult, run_dir: Path) -> int:
    print_result(console, plan, result, run_dir)
    summary = {
        "state": result.state.value,
        "reason": result.reason,
        "ice": result.ice,
        "average_ce": result.average_ce,
        "cycles": [{"cycle": c, "ce": ce} for c, ce in result.ledger.efficiencies()],
        "ocv_v": result.ocv_v,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0 if result.state is RunState.COMPLETED else EXIT_FAILED


async def _execute_checked(
    plan: Plan,
    cfg: RigConfig,
    run_dir: Path,
    text: str,
    console: Console,
    socket_path: Path | None,
    headless: bool = False,
    resume: ResumeInfo | None = None,
) -> RunResult:
    return await execute(
        plan,
        cfg,
        run_dir=run_dir,
        protocol_text=text,
        console=console,
        socket_path=socket_path,
        headless=headless,
        resume=resume,
    )


def _run_state(run_dir: Path) -> str | None:
    db = run_dir / "run.sqlite"
    if not db.exists() or (run_dir / "summary.json").exists():
        return None
    try:
        progress = read_progress(db)
    except Exception:
        return None
    return None if progress is None else str(progress["state"])


def find_unfinished(runs_root: Path, protocol_sha256: str) -> Path | None:
    """The newest run folder of this protocol that was killed before it finished, or None."""
    if not runs_root.is_dir():
        return None
    for d in sorted((p for p in runs_root.iterdir() if p.is_dir()), reverse=True):
        state = _run_state(d)
        if state is None or state in FINISHED_STATES:
            continue
        try:
            if read_meta(d / "run.sqlite").get("protocol_sha256") == protocol_sha256:
                return d
        except Exception:
            continue
    return None


def load_resume(run_dir: Path, plan: Plan) -> ResumeInfo:
    """Rebuild a killed run's position from its store (protocol, progress row, last sample, step_end events)."""
    db = run_dir / "run.sqlite"
    progress = read_progress(db)
    if progress is None:
        raise RunError(f"{run_dir}: no step progress stored; the run cannot be resumed")
    if progress["state"] in FINISHED_STATES:
        raise RunError(f"{run_dir}: the run has already {progress['state']}")
    meta = read_meta(db)
    resumes = int(meta.get("resumes", "0")) + 1
    if resumes > MAX_AUTO_RESUMES:
        raise RunError(f"{run_dir}: resumed {resumes - 1} times already (the cap is {MAX_AUTO_RESUMES})")
    last = read_last_sample(db)
    step_i = int(progress["step_index"])
    if not 0 <= step_i < len(plan.steps):
        raise RunError(f"{run_dir}: stored step index {step_i} is outside the plan")
    ledger: list[tuple[int, str, float]] = []
    for e in read_events(db):
        if e["kind"] == "step_end" and "charge_c" in e["data"]:
            i = int(e["data"].get("step", -1))
            if 0 <= i < step_i:
                st = plan.steps[i]
                ledger.append((st.cycle, st.kind, float(e["data"]["charge_c"])))
    test_time = max(float(progress["test_time_s"]), last.test_time_s if last is not None else 0.0)
    step = plan.steps[step_i]
    return ResumeInfo(
        point=ResumePoint(
            step_i=step_i,
            charge_c=float(progress["charge_c"]),
            time_in_step_s=float(progress["time_in_step_s"]),
            ledger=tuple(ledger),
            resumes=resumes,
        ),
        test_time_s=test_time + 1e-6,
        last_unix_s=last.unix_time_s if last is not None else unix_now(),
        step_current_a=getattr(step, "current_a", None),
    )


def resume_command(
    run_dir: Path,
    *,
    console: Console,
    err: Console,
    socket_path: Path | None = None,
    headless: bool = False,
) -> int:
    """`rig resume RUN_DIR`: continue a killed run from its store, re-reading the hardware first."""
    db = run_dir / "run.sqlite"
    try:
        meta = read_meta(db)
    except Exception as exc:
        err.print(f"{run_dir}: cannot resume: {exc}", highlight=False)
        return EXIT_INVALID
    text = meta.get("protocol_text")
    if not text:
        err.print(f"{run_dir}: the store holds no protocol text", highlight=False)
        return EXIT_INVALID
    cfg_path = next((p for p in (run_dir / "rig.toml", run_dir / "sim-rig.toml") if p.exists()), None)
    if cfg_path is None:
        err.print(f"{run_dir}: no rig.toml or sim-rig.toml in the run folder", highlight=False)
        return EXIT_INVALID
    try:
        cfg = load_config(cfg_path)
        plan = validate_protocol(text, str(run_dir / "protocol.yaml"), limits_from_config(cfg))
        info = load_resume(run_dir, plan)
    except (RunError, ProtocolError, Exception) as exc:
        err.print(f"{run_dir}: cannot resume: {exc}", highlight=False)
        return EXIT_FAILED
    console.print(f"resuming {run_dir} at step {info.point.step_i + 1} (resume #{info.point.resumes})", highlight=False)
    result = asyncio.run(_execute_checked(plan, cfg, run_dir, text, console, socket_path, headless, info))
    return _finish(console, plan, result, run_dir)
