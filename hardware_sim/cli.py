"""`python -m hardware_sim` (and `rig sim`): start the simulated rig, or talk to a running one's control port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from hardware_sim.control_port import control_request
from hardware_sim.params import MechanicsParams, SimParams

app = typer.Typer(
    help="A wire-level simulator of the whole rig. Without a sub-command it starts the rig.",
    invoke_without_command=True,
    add_completion=False,
)


@app.callback()
def serve(
    ctx: typer.Context,
    speed: Annotated[float, typer.Option(help="experiment time runs at N x wall time")] = 1.0,
    electrolyte: Annotated[str, typer.Option(help="dme or ec-dmc")] = "dme",
    stiffness_scale: Annotated[float, typer.Option(help="stack and spring stiffness x this (0.05-20)")] = 1.0,
    electrode_diameter_mm: Annotated[float, typer.Option(help="working electrode diameter")] = 12.0,
    baudrate: Annotated[int, typer.Option(help="emulated baud of the RS-485 line(s)")] = 115200,
    gauge_baudrate: Annotated[int, typer.Option(help="emulated baud of the Mark-10 line")] = 115200,
    shared_bus: Annotated[bool, typer.Option(help="load cell and press drive on one RS-485 line")] = True,
    line_timing: Annotated[bool, typer.Option(help="emulate the wire time of the baud rate")] = True,
    seed: Annotated[int, typer.Option(help="seed of the sensor noise")] = 1,
    config_out: Annotated[Path, typer.Option(help="where to write the rig configuration for these endpoints")] = Path(
        "sim-rig.toml"
    ),
    control_port: Annotated[int, typer.Option(help="TCP port of the control port (0 = any free port)")] = 0,
    ready_file: Annotated[Path | None, typer.Option(help="write the endpoints as JSON here once listening")] = None,
    pressure_pin_kpa: Annotated[
        float | None, typer.Option(help="an ideal press: hold the stack at exactly this pressure (no controller)")
    ] = None,
    controller_pid: Annotated[
        int | None, typer.Option(help="the controller this simulator serves (rig run --sim): watched, see below")
    ] = None,
    orphan_grace_s: Annotated[
        float,
        typer.Option(
            help="with --controller-pid: once that process is gone, wait this many wall seconds for a controller "
            "to attach (rig resume RUN), then exit; the rig goes on meanwhile as a real one would"
        ),
    ] = 600.0,
) -> None:
    """Start the simulated rig and serve until interrupted."""
    if ctx.invoked_subcommand is not None:
        return
    if electrolyte not in ("dme", "ec-dmc"):
        raise typer.BadParameter(f"electrolyte must be dme or ec-dmc, got {electrolyte!r}", param_hint="--electrolyte")
    try:
        params = SimParams(
            electrolyte=electrolyte,
            mechanics=MechanicsParams(stiffness_scale=stiffness_scale, electrode_diameter_mm=electrode_diameter_mm),
            seed=seed,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    asyncio.run(
        _serve(
            params,
            speed=speed,
            baudrate=baudrate,
            gauge_baudrate=gauge_baudrate,
            shared_bus=shared_bus,
            line_timing=line_timing,
            config_out=config_out,
            control_port=control_port,
            ready_file=ready_file,
            pin_pressure_kpa=pressure_pin_kpa,
            controller_pid=controller_pid,
            orphan_grace_s=orphan_grace_s,
        )
    )


def _write_atomically(path: Path, text: str) -> None:
    """Write `text` so that a reader that sees `path` exist always sees all of it (temp file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _log(message: str) -> None:
    print(message, flush=True)


async def _serve(
    params: SimParams,
    *,
    config_out: Path,
    ready_file: Path | None,
    pin_pressure_kpa: float | None,
    controller_pid: int | None = None,
    orphan_grace_s: float = 600.0,
    **kwargs: Any,
) -> None:
    from hardware_sim.controller_watch import ControllerWatch
    from hardware_sim.rig import SimulatedRig

    rig = SimulatedRig(params=params, **kwargs)
    rig.model.pin_pressure_kpa = pin_pressure_kpa
    stop = asyncio.Event()
    watch = ControllerWatch(controller_pid, grace_s=orphan_grace_s, on_expired=stop.set, log=_log)

    def attach(req: dict[str, Any]) -> dict[str, Any]:
        pid = req.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise ValueError(f"attach needs a process id, got {pid!r}")
        return watch.attach(pid)

    def shutdown(req: dict[str, Any]) -> dict[str, Any]:
        _log("shutdown requested on the control port")
        stop.set()
        return {}

    rig.control.add_command("attach", attach)
    rig.control.add_command("shutdown", shutdown)
    rig.control.add_command("controller", lambda req: watch.status())
    await rig.start()
    watcher: asyncio.Task[None] | None = None
    try:
        rig.write_config(config_out)
        endpoints = rig.endpoints()
        scale = params.mechanics.stiffness_scale
        print(f"simulated rig running at {rig.clock.speed:g}x ({params.electrolyte}, stiffness x{scale:g})")
        for name, where in endpoints.items():
            print(f"  {name:<12} {where}")
        print(f"  config       {config_out}")
        sys.stdout.flush()
        if ready_file is not None:
            ready = json.dumps({**endpoints, "config": str(config_out), "pid": os.getpid()})
            await asyncio.to_thread(_write_atomically, ready_file, ready)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        watcher = asyncio.create_task(watch.run(), name="controller-watch")  # idle until a controller attaches
        await stop.wait()
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await rig.close()


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


@app.command()
def fault(
    device: Annotated[str, typer.Argument(help="loadcell, stepper, gauge or potentiostat")] = "",
    settings: Annotated[list[str] | None, typer.Argument(help="NAME=VALUE, e.g. no_reply=true delay_s=0.5")] = None,
    control: Annotated[str, typer.Option(help="host:port of the running simulator's control port")] = "",
    clear: Annotated[bool, typer.Option(help="clear faults (of DEVICE, or all)")] = False,
) -> None:
    """Inject or clear faults in a running simulator."""
    if not control:
        raise typer.BadParameter("give --control HOST:PORT (printed by the simulator)", param_hint="--control")
    if clear:
        req: dict[str, Any] = {"cmd": "clear", **({"device": device} if device else {})}
    else:
        values = {}
        for item in settings or []:
            name, sep, value = item.partition("=")
            if not sep:
                raise typer.BadParameter(f"expected NAME=VALUE, got {item!r}")
            values[name] = _parse_value(value)
        req = {"cmd": "fault", "device": device, "set": values}
    reply = control_request(control, req)
    print(json.dumps(reply))
    if not reply.get("ok"):
        raise typer.Exit(1)


@app.command()
def state(control: Annotated[str, typer.Option(help="host:port of the control port")]) -> None:
    """Print the model's ground truth as JSON."""
    reply = control_request(control, {"cmd": "state"})
    print(json.dumps(reply.get("state", reply), indent=2))
    if not reply.get("ok"):
        raise typer.Exit(1)


def main() -> None:
    """Entry point of `python -m hardware_sim`."""
    app()
