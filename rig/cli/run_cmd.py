"""`rig run FILE [--config CFG] [--sim] [--speed N]`: validate, connect, run with the pressure held, report CE."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import signal
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

import rig
from drivers.errors import DeviceError
from protocols.errors import ProtocolError
from protocols.plan import Plan
from protocols.validate import validate_protocol
from rig import simulator
from rig.cli.display import Display
from rig.cli.validate_cmd import default_limits, limits_from_config, read_protocol_file
from rig.clock import ExperimentClock, unix_now
from rig.config import ConfigError, RigConfig, RigEnvironment, load_config
from rig.control.controller import ControllerSettings, PressureController
from rig.data.json_log import JsonLog
from rig.data.paths import resolve_runs_root
from rig.data.store import RunStore, read_events, read_last_sample, read_meta, read_progress
from rig.device_lock import RigLock, RigLocked, lock_rig, rig_lock_keys
from rig.devices import build_devices
from rig.remote.operator_socket import OperatorSocket, SocketBusy, default_socket
from rig.remote.run_telemetry import Handler, run_snapshot, run_telemetry
from rig.run.engine import ResumePoint, RunEngine, RunResult, RunState
from rig.run.supervisor import SupervisorSettings
from rig.sd_notify import notify, watchdog_interval_s

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


_HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


@contextlib.asynccontextmanager
async def _signals(engine: RunEngine, display: Display | None) -> AsyncIterator[None]:
    """Ctrl-C, SIGTERM, a hang-up (SIGHUP: an SSH drop, a closed laptop) and SIGQUIT all do one thing: the safe
    state, recorded as an abort. After a hang-up the terminal is gone: nothing more is written to it."""
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[Any]] = set()

    def on_signal(sig: signal.Signals) -> None:
        if sig is signal.SIGHUP:
            _terminal_gone(display)
        t = loop.create_task(engine.abort(f"signal {sig.name}: safe stop"))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    for sig in _HANDLED_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield
    finally:
        for sig in _HANDLED_SIGNALS:
            loop.remove_signal_handler(sig)
        await asyncio.gather(*tasks, return_exceptions=True)


def _terminal_gone(display: Display | None) -> None:
    """A hang-up: stop the live display, and point a terminal's stdout/stderr at /dev/null (writing to a tty that
    has hung up fails, and a failed write must not stop the safe stop, the store or the run's JSON log)."""
    if display is not None:
        display.close()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            with contextlib.suppress(OSError):
                if os.isatty(fd):
                    os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _fan_out(
    sinks: list[Callable[[str, str, dict[str, Any]], None]], kind: str, message: str, data: dict[str, Any]
) -> None:
    for sink in sinks:
        sink(kind, message, data)


def startup_failure(exc: BaseException, cfg: RigConfig, config_path: Path | None) -> str:
    """One line for a device that cannot be reached or refuses its start-up check: the device, what it said,
    and what to check in which file."""
    where = str(config_path) if config_path is not None else "the rig configuration"
    device = getattr(exc, "device", "")
    if device == "potentiostat" or "visa" in type(exc).__module__.lower():
        hint = f"check [potentiostat] resource = {cfg.potentiostat.resource!r} in {where} and that the instrument is on"
    elif device:
        buses = {cfg.load_cell.bus, cfg.press.bus}
        ports = ", ".join(f"[buses.{b}] port = {cfg.buses[b].port!r}" for b in sorted(buses))
        hint = f"check {ports} in {where}, the cable and the device's power"
    else:
        hint = f"check the ports and resources in {where}"
    text = str(exc) if isinstance(exc, DeviceError) else f"{type(exc).__name__}: {exc}"
    return f"{text}; {hint}"


async def execute(
    plan: Plan,
    cfg: RigConfig,
    *,
    run_dir: Path,
    protocol_text: str,
    console: Console,
    socket_path: Path | None = None,
    jlog: JsonLog | None = None,
    resume: ResumeInfo | None = None,
    config_path: Path | None = None,
) -> RunResult:
    """Connect the rig, hold pressure, run the plan, and record everything in `run_dir`.

    Raises RunError (one line: the device and what to check) when the rig cannot start; the run's store then
    holds that as an alarm event."""
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
    # engine events go to the JSON log (headless) and to the broker (when telemetry is configured)
    event_sinks: list[Callable[[str, str, dict[str, Any]], None]] = [jlog.event] if jlog is not None else []
    display = None if jlog is not None else Display(console)
    engine = RunEngine(
        plan=plan,
        potentiostat=devs.potentiostat,
        controller=controller,
        clock=clock,
        voltage_compliance_v=cfg.potentiostat.voltage_limit_v,
        store=store,
        sample_period_s=sample_period_s(cfg.clock.speed),
        on_progress=jlog.progress if jlog is not None else display.update if display is not None else None,
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
        async with _signals(engine, display):  # from here on a signal makes the rig safe, even during start-up
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
            try:
                await sock.start()
            except SocketBusy as exc:
                raise RunError(str(exc)) from None
            try:
                # the potentiostat first: its power-on output-off state (NORMAL) would short the cell until HIMP
                await devs.potentiostat.connect()
                safety = await devs.potentiostat.verify_safe(cfg.potentiostat.voltage_limit_v)
                if resume is not None:
                    await _readback_after_crash(engine, devs.potentiostat, safety.output_on, resume, cfg.clock.speed)
                ident = await devs.potentiostat.identify()
                await controller.start()
            except (DeviceError, OSError) as exc:
                why = startup_failure(exc, cfg, config_path)
                engine.record_event("alarm", f"the rig could not start: {why}")
                raise RunError(why) from None
            await store.set_meta({"potentiostat": f"{ident.vendor} {ident.model} {ident.serial} {ident.firmware}"})
            notify("READY=1")
            interval = watchdog_interval_s()
            if interval is not None:
                watchdog = asyncio.get_running_loop().create_task(_watchdog(controller, interval), name="sd-watchdog")

            remote: dict[str, Handler] = {
                "pause": engine.pause,
                "resume": engine.resume,
                "abort": engine.abort,
                "ack": engine.ack,
            }
            with display if display is not None else contextlib.nullcontext():
                async with run_telemetry(
                    cfg,
                    snapshot=lambda: run_snapshot(engine.progress(), controller.status()),
                    handlers=remote,
                    # a remote command, accepted or refused: the run store, the JSON log and the events topic
                    record_event=lambda kind, message, data: engine.record_event(kind, message, **data),
                ) as link:
                    if link is not None:
                        event_sinks.append(link.publish_event)
                    return await engine.run()
    finally:
        notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        with contextlib.suppress(Exception):
            await asyncio.wait_for(controller.stop(), 15.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(devs.close(), 15.0)
        await sock.close()
        await store.close()


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
        counted = resume.point.extra_charge_c
        by_safe = f"; `rig safe` counted {counted:.6g} C after the last record" if counted else ""
        engine.record_event("resume", f"hardware readback: the output was off{by_safe}")
        return
    reading = await pot.read()
    t_off_unix = unix_now()  # the instrument switches off as the command arrives (as the engine counts it)
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
    reason = escape(result.reason)
    console.print(f"[{colour}]run {result.state.value}[/{colour}] {reason}".rstrip(), soft_wrap=True)
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
    console.print(f"run data: {run_dir}", soft_wrap=True, highlight=False)


def _say(con: Console, text: str) -> None:
    """One line to the operator (a terminal that hung up is skipped, never fatal)."""
    with contextlib.suppress(OSError):
        con.print(text, markup=False, highlight=False, soft_wrap=True)


def _protocol_errors(err: Console, exc: ProtocolError) -> int:
    for issue in exc.issues:
        _say(err, str(issue))
    return EXIT_INVALID


def mark_failed(run_dir: Path, reason: str, jlog: JsonLog | None = None) -> None:
    """A run that could not start (or cannot go on) is marked failed: summary.json says why, so `rig run` never
    offers it for resuming and `rig runs` shows it; the JSON log has it too."""
    summary: dict[str, Any] = {"state": "failed", "reason": reason, "ice": None, "average_ce": None}
    with contextlib.suppress(OSError):
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if jlog is not None:
        jlog.error(reason)


def _lock_for_sim(socket_path: Path | None, command: str) -> tuple[RigLock, str, Path]:
    """A `--sim` run's name and operator socket: `sim`, else `sim-2`, `sim-3`, ... (the first one free); a name
    set in the environment (RIG_RIG__NAME, as for any rig configuration) is taken as it is."""
    named = RigEnvironment().name
    names = [named] if named else ["sim", *(f"sim-{n}" for n in range(2, 100))]
    for name in names:
        sock = socket_path or default_socket(name)
        lock = RigLock([f"operator-socket:{os.path.realpath(sock)}"], command=command)
        try:
            return lock.acquire(), name, sock
        except RigLocked:
            if socket_path is not None or named:
                raise
    raise RunError("99 simulated rigs are running already")


def run_command(
    file: Path,
    *,
    config: Path | None,
    sim: bool,
    speed: float | None,
    runs_root: Path | None,
    console: Console,
    err: Console,
    socket_path: Path | None = None,
    headless: bool = False,
    resume_unfinished: bool = False,
    orphan_grace_s: float = simulator.DEFAULT_ORPHAN_GRACE_S,
) -> int:
    """The whole `rig run`: returns the exit code."""
    try:
        text = read_protocol_file(file)
    except ProtocolError as exc:
        return _protocol_errors(err, exc)
    cfg: RigConfig | None = None
    if config is not None:
        try:
            cfg = load_config(config)
        except ConfigError as exc:
            _say(err, str(exc))
            return EXIT_INVALID
    elif not sim:
        _say(err, "give --config CFG for a real rig, or --sim to run on the simulator")
        return EXIT_INVALID
    if not sim and speed is not None and speed != 1.0:
        _say(err, "--speed applies to --sim only: a real rig runs in real time")
        return EXIT_INVALID
    try:
        limits = limits_from_config(cfg) if cfg is not None else default_limits()
    except ConfigError as exc:  # RIG_RIG__* overrides of the built-in limits
        _say(err, str(exc))
        return EXIT_INVALID
    try:
        plan = validate_protocol(text, str(file), limits)
    except ProtocolError as exc:
        return _protocol_errors(err, exc)
    sim_model = ""
    if sim:
        try:
            sim_model = require_sim_electrolyte(plan.electrolyte, str(file))
        except RunError as exc:
            _say(err, str(exc))
            return EXIT_INVALID
    root = resolve_runs_root(runs_root, cfg)
    unfinished = find_unfinished(root, hashlib.sha256(text.encode()).hexdigest())
    if unfinished is not None:
        if resume_unfinished:
            _say(err, f"resuming the unfinished run {unfinished}")
            return resume_command(unfinished, console=console, err=err, socket_path=socket_path, headless=headless)
        _say(
            err,
            f"note: {unfinished} is an unfinished run of this protocol; continue it with "
            f"`rig resume {unfinished}` (or `rig run --resume-unfinished`); starting a new run",
        )
    # one controller per rig: the lock comes before any folder, process or device (rig.device_lock)
    command = f"rig run {file}"
    try:
        if sim:
            lock, sim_name, sock = _lock_for_sim(socket_path, command)
        else:
            assert cfg is not None
            sock = socket_path or default_socket(cfg.rig.name)
            lock = lock_rig(cfg, command=command, socket_path=sock)
    except (RigLocked, RunError) as exc:
        _say(err, f"rig run: {exc}")
        return EXIT_INVALID
    try:
        run_dir = make_run_dir(root, plan)
        lock.set_run_dir(run_dir)
        (run_dir / "protocol.yaml").write_text(text, encoding="utf-8")
        _say(console, f"run folder: {run_dir}")
        jlog = JsonLog(run_dir / "run.log.jsonl") if headless else None
        try:
            if sim:
                result = _run_on_sim(
                    plan, text, file, run_dir, lock, sim_name, sock, speed, sim_model, orphan_grace_s, console, jlog
                )
            else:
                assert cfg is not None and config is not None
                shutil.copy(config, run_dir / "rig.toml")
                result = asyncio.run(
                    execute(
                        plan,
                        cfg,
                        run_dir=run_dir,
                        protocol_text=text,
                        console=console,
                        socket_path=sock,
                        jlog=jlog,
                        config_path=config,
                    )
                )
        except ProtocolError as exc:
            mark_failed(run_dir, "; ".join(str(i) for i in exc.issues), jlog)
            return _protocol_errors(err, exc)
        except (RunError, ConfigError) as exc:
            mark_failed(run_dir, str(exc), jlog)
            _say(err, f"rig run: {exc}")
            return EXIT_FAILED
        except Exception as exc:  # a bug, not an expected failure: the traceback goes to the run folder
            return _internal_error(run_dir, exc, err, jlog)
        finally:
            if jlog is not None:
                jlog.close()
        return _finish(console, plan, result, run_dir)
    finally:
        lock.release()


def _internal_error(run_dir: Path, exc: BaseException, err: Console, jlog: JsonLog | None) -> int:
    path = run_dir / "traceback.txt"
    with contextlib.suppress(OSError):
        path.write_text("".join(traceback.format_exception(exc)))
    reason = f"internal error: {type(exc).__name__}: {exc} (traceback in {path})"
    mark_failed(run_dir, reason, jlog)
    _say(err, f"rig: {reason}")
    return EXIT_FAILED


def _run_on_sim(
    plan: Plan,
    text: str,
    file: Path,
    run_dir: Path,
    lock: RigLock,
    name: str,
    sock: Path,
    speed: float | None,
    sim_model: str,
    orphan_grace_s: float,
    console: Console,
    jlog: JsonLog | None,
) -> RunResult:
    """`rig run --sim`: start the simulator for this run, lock its devices too, run, stop it."""
    sim_speed = speed or DEFAULT_SIM_SPEED
    diameter_mm = 2 * (plan.electrode_area_m2 / 3.141592653589793) ** 0.5 * 1e3
    try:
        with simulator.start_simulator(
            run_dir, speed=sim_speed, electrolyte=sim_model, diameter_mm=diameter_mm, orphan_grace_s=orphan_grace_s
        ) as handle:
            sim_cfg = _renamed(load_config(handle.config_path), name)
            lock.extend(rig_lock_keys(sim_cfg))
            # the simulated rig's own limits (with any RIG_* overrides) apply, as a real rig's would
            plan = validate_protocol(text, str(file), limits_from_config(sim_cfg))
            _say(console, f"simulator at {sim_speed:g}x: {', '.join(handle.endpoints.values())}")
            return asyncio.run(
                execute(
                    plan,
                    sim_cfg,
                    run_dir=run_dir,
                    protocol_text=text,
                    console=console,
                    socket_path=sock,
                    jlog=jlog,
                    config_path=handle.config_path,
                )
            )
    except (simulator.SimulatorError, RigLocked) as exc:
        raise RunError(str(exc)) from None


def _renamed(cfg: RigConfig, name: str) -> RigConfig:
    """The configuration with another rig name (a second simulated rig is `sim-2`)."""
    if cfg.rig.name == name:
        return cfg
    return cfg.model_copy(update={"rig": cfg.rig.model_copy(update={"name": name})})


def _finish(console: Console, plan: Plan, result: RunResult, run_dir: Path) -> int:
    """summary.json first (it is the record), then the operator's view."""
    reason = "; ".join([result.reason, *result.left_undone]).strip("; ")
    summary = {
        "state": result.state.value,
        "reason": reason,
        "ice": result.ice,
        "average_ce": result.average_ce,
        "cycles": [{"cycle": c, "ce": ce} for c, ce in result.ledger.efficiencies()],
        "ocv_v": result.ocv_v,
        "left_undone": result.left_undone,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    with contextlib.suppress(OSError):
        print_result(console, plan, dataclasses.replace(result, reason=reason), run_dir)
    if result.left_undone:
        return EXIT_FAILED
    return 0 if result.state is RunState.COMPLETED else EXIT_FAILED


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
    test_time = max(float(progress["test_time_s"]), last.test_time_s if last is not None else 0.0)
    by_safe = 0.0  # charge `rig safe` found passing after the last record (it switched the output off)
    for e in read_events(db):
        if e["kind"] == "step_end" and "charge_c" in e["data"]:
            i = int(e["data"].get("step", -1))
            if 0 <= i < step_i:
                st = plan.steps[i]
                ledger.append((st.cycle, st.kind, float(e["data"]["charge_c"])))
        elif e["kind"] == "safe" and e["test_time_s"] > test_time and e["data"].get("charge_c"):
            by_safe += float(e["data"]["charge_c"])
            test_time = max(test_time, float(e["test_time_s"]))
    step = plan.steps[step_i]
    return ResumeInfo(
        point=ResumePoint(
            step_i=step_i,
            charge_c=float(progress["charge_c"]),
            time_in_step_s=float(progress["time_in_step_s"]),
            extra_charge_c=by_safe if getattr(step, "current_a", None) is not None else 0.0,
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
    """`rig resume RUN_DIR`: continue a killed run from its store, re-reading the hardware first.

    A `--sim` run continues on its own simulator, which waited for this (hardware_sim.controller_watch): this
    process attaches to it, and stops it at the end as `rig run --sim` would have. If it is gone, the simulated
    cell is gone with it: the run is marked failed."""
    db = run_dir / "run.sqlite"
    try:
        meta = read_meta(db)
    except Exception as exc:
        _say(err, f"{run_dir}: cannot resume: {exc}")
        return EXIT_INVALID
    text = meta.get("protocol_text")
    if not text:
        _say(err, f"{run_dir}: the store holds no protocol text")
        return EXIT_INVALID
    cfg_path = next((p for p in (run_dir / "rig.toml", run_dir / "sim-rig.toml") if p.exists()), None)
    if cfg_path is None:
        _say(err, f"{run_dir}: no rig.toml or sim-rig.toml in the run folder")
        return EXIT_INVALID
    own_sim = cfg_path.name == "sim-rig.toml"  # started by `rig run --sim` for this run
    try:
        cfg = load_config(cfg_path)
        if own_sim:
            cfg = _renamed(cfg, _stored_rig_name(meta) or cfg.rig.name)
        plan = validate_protocol(text, str(run_dir / "protocol.yaml"), limits_from_config(cfg))
        info = load_resume(run_dir, plan)
    except (RunError, ProtocolError, ConfigError) as exc:
        _say(err, f"{run_dir}: cannot resume: {exc}")
        return EXIT_FAILED
    sock = socket_path or default_socket(cfg.rig.name)
    try:
        lock = lock_rig(cfg, command=f"rig resume {run_dir}", socket_path=sock)
    except RigLocked as exc:
        _say(err, f"rig resume: {exc}")
        return EXIT_INVALID
    jlog: JsonLog | None = None
    attached = False
    try:
        lock.set_run_dir(run_dir)
        jlog = JsonLog(run_dir / "run.log.jsonl") if headless else None
        if own_sim and cfg.sim.control:
            try:
                took = simulator.attach(cfg.sim.control)
            except simulator.SimulatorError as exc:
                reason = (
                    f"the simulator of this --sim run is gone ({exc}); the simulated cell went with it, so the run "
                    "cannot be continued: marked failed"
                )
                mark_failed(run_dir, reason, jlog)
                _say(err, f"{run_dir}: cannot resume: {reason}")
                return EXIT_FAILED
            attached = True
            unattended = took.get("unattended_s")
            if unattended is not None:
                _say(console, f"simulator attached after {float(unattended):.1f} s unattended")
        _say(console, f"resuming {run_dir} at step {info.point.step_i + 1} (resume #{info.point.resumes})")
        try:
            result = asyncio.run(
                execute(
                    plan,
                    cfg,
                    run_dir=run_dir,
                    protocol_text=text,
                    console=console,
                    socket_path=sock,
                    jlog=jlog,
                    resume=info,
                    config_path=cfg_path,
                )
            )
        except RunError as exc:
            if jlog is not None:
                jlog.error(str(exc))
            _say(err, f"rig resume: {exc}; the run stays resumable (rig resume {run_dir})")
            return EXIT_FAILED
        except Exception as exc:
            return _internal_error(run_dir, exc, err, jlog)
        return _finish(console, plan, result, run_dir)
    finally:
        if attached and cfg.sim.control:
            simulator.shutdown(cfg.sim.control)
        if jlog is not None:
            jlog.close()
        lock.release()


def _stored_rig_name(meta: dict[str, str]) -> str | None:
    """The rig name the run had (a second simulated rig is `sim-2`), from the configuration stored with it."""
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        name = json.loads(meta["rig_config"])["rig"]["name"]
        return str(name) if name else None
    return None
