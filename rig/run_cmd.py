"""`rig run FILE [--config CFG] [--sim] [--speed N]`: validate, connect, run with the pressure held, report CE."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
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
from rig.clock import ExperimentClock
from rig.config import RigConfig, load_config
from rig.devices import build_devices
from rig.engine import Progress, RunEngine, RunResult, RunState
from rig.operator_socket import OperatorSocket, default_socket
from rig.pressure_controller import PressureController
from rig.store import RunStore
from rig.validate_cmd import default_limits, limits_from_config

EXIT_INVALID = 2
EXIT_FAILED = 1
DEFAULT_SIM_SPEED = 500.0


class RunError(Exception):
    """The run could not start; the message says why."""


def electrolyte_key(text: str) -> str:
    """Map a protocol's electrolyte text to the simulator's name (dme or ec-dmc)."""
    t = text.lower()
    if "ec" in re.split(r"[^a-z]+", t) or "ec-dmc" in t or "ec:dmc" in t or "carbonate" in t:
        return "ec-dmc"
    return "dme"


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


async def execute(
    plan: Plan,
    cfg: RigConfig,
    *,
    run_dir: Path,
    protocol_text: str,
    console: Console,
    socket_path: Path | None = None,
) -> RunResult:
    """Connect the rig, hold pressure, run the plan, and record everything in `run_dir`."""
    clock = ExperimentClock(cfg.clock.speed)
    devs = build_devices(cfg, clock=clock)
    controller = PressureController.from_config(cfg, force=devs.force, press=devs.press, clock=clock)
    store = RunStore(run_dir / "run.sqlite")
    await store.open()
    display = _Display(console)
    engine = RunEngine(
        plan=plan,
        potentiostat=devs.potentiostat,
        controller=controller,
        clock=clock,
        voltage_compliance_v=cfg.potentiostat.voltage_limit_v,
        store=store,
        on_progress=display.update,
    )
    sock = OperatorSocket(
        socket_path or default_socket(cfg.rig.name),
        {"pause": engine.pause, "resume": engine.resume, "abort": engine.abort, "status": engine.status},
    )
    try:
        await store.set_meta(
            {
                "protocol_text": protocol_text,
                "protocol_sha256": hashlib.sha256(protocol_text.encode()).hexdigest(),
                "protocol_file": plan.source_file,
                "rig_config": cfg.model_dump(mode="json"),
                "software_version": rig.__version__,
                "speed": cfg.clock.speed,
            }
        )
        await sock.start()
        # the potentiostat first: its power-on output-off state (NORMAL) would short the cell until HIMP is set
        await devs.potentiostat.connect()
        await devs.potentiostat.verify_safe(cfg.potentiostat.voltage_limit_v)
        ident = await devs.potentiostat.identify()
        await controller.start()
        await store.set_meta({"potentiostat": f"{ident.vendor} {ident.model} {ident.serial} {ident.firmware}"})
        with display:
            async with _signals(engine):
                result = await engine.run()
        return result
    finally:
        with contextlib.suppress(Exception):
            await controller.stop()
        await devs.close()
        await sock.close()
        await store.close()


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
    run_dir = make_run_dir(runs_root, plan)
    (run_dir / "protocol.yaml").write_text(text, encoding="utf-8")
    console.print(f"run folder: {run_dir}", highlight=False)
    try:
        if sim:
            sim_speed = speed or DEFAULT_SIM_SPEED
            diameter_mm = 2 * (plan.electrode_area_m2 / 3.141592653589793) ** 0.5 * 1e3
            with start_simulator(
                run_dir, speed=sim_speed, electrolyte=electrolyte_key(plan.electrolyte), diameter_mm=diameter_mm
            ) as handle:
                sim_cfg = load_config(handle.config_path)
                console.print(f"simulator at {sim_speed:g}x: {', '.join(handle.endpoints.values())}", highlight=False)
                result = asyncio.run(_execute_checked(plan, sim_cfg, run_dir, text, console, socket_path))
        else:
            assert cfg is not None
            if speed is not None and speed != 1.0:
                err.print("--speed applies to --sim only: a real rig runs in real time", highlight=False)
                return EXIT_INVALID
            shutil.copy(config, run_dir / "rig.toml")  # type: ignore[arg-type]
            result = asyncio.run(_execute_checked(plan, cfg, run_dir, text, console, socket_path))
    except RunError as exc:
        err.print(str(exc), highlight=False)
        return EXIT_FAILED
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
    plan: Plan, cfg: RigConfig, run_dir: Path, text: str, console: Console, socket_path: Path | None
) -> RunResult:
    return await execute(plan, cfg, run_dir=run_dir, protocol_text=text, console=console, socket_path=socket_path)
