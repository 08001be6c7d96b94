"""The `rig` command."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from rig.clock import ExperimentClock
from rig.config import ConfigError, load_config

app = typer.Typer(help="Controller for pressure-controlled electroplating rigs.", no_args_is_help=True)


@app.callback()
def _main() -> None:
    """Controller for pressure-controlled electroplating rigs."""


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def sim(ctx: typer.Context) -> None:
    """Start the simulated rig in its own process (all options go to `python -m hardware_sim`; try --help)."""
    # replace this process, so signals (Ctrl-C, SIGTERM from a supervisor) reach the simulator itself
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "hardware_sim", *ctx.args])


@app.command()
def check(
    config: Annotated[Path, typer.Option("--config", "-c", help="rig configuration (TOML)")] = Path("rig.toml"),
) -> None:
    """Connect every device; print identity, one fresh reading and the safety settings read back."""
    from rig.cli.check import run_check
    from rig.device_lock import RigLocked, lock_rig

    console = Console(soft_wrap=True)  # an error line is never broken inside a word or a path
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        console.print(str(exc), style="red", markup=False, highlight=False)
        raise typer.Exit(2) from exc
    try:  # a running controller owns the devices: checking them now would disturb its run
        lock = lock_rig(cfg, command=f"rig check --config {config}")
    except RigLocked as exc:
        Console(stderr=True).print(f"rig check: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    try:
        reports = asyncio.run(run_check(cfg, clock=ExperimentClock(speed=cfg.clock.speed)))
    finally:
        lock.release()
    console.print(f"[bold]rig check[/bold]: {cfg.rig.name} ({config})")
    for rep in reports:
        result = "[green]OK[/green]" if rep.ok else "[red]FAILED[/red]"
        console.print(f"\n[bold]{rep.device}[/bold]  {result}  {rep.identity}")
        if rep.reading:
            console.print(f"  reading  {rep.reading}")
        for key, value in rep.safety.items():
            console.print(f"  {key} = {value}")
        if rep.error:
            console.print(f"  {rep.error}", style="red", markup=False, highlight=False)
    console.print()
    failed = [r for r in reports if not r.ok]
    for rep in failed:
        console.print(f"FAILED {rep.device}: {rep.error}", style="red", markup=False, highlight=False)
    if failed:
        raise typer.Exit(1)
    console.print("[green]all devices OK[/green]")


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="protocol (YAML)")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="rig configuration (TOML); default: built-in limits")
    ] = None,
) -> None:
    """Check a protocol against the rig's limits; print the plan (exit 0) or every error as FILE:LINE:COL (exit 2)."""
    from rig.cli.validate_cmd import run_validate

    rc = run_validate(file, config, out=Console(), err=Console(stderr=True))
    if rc:
        raise typer.Exit(rc)


@app.command()
def schema() -> None:
    """Print the JSON Schema of protocol files (for editors: yaml-language-server, VS Code's YAML extension)."""
    from protocols.json_schema import schema_text

    sys.stdout.buffer.write(schema_text().encode("utf-8"))  # JSON is UTF-8, whatever the terminal's locale
    sys.stdout.flush()


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="protocol (YAML)")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="rig configuration (TOML)")] = None,
    sim: Annotated[
        bool, typer.Option("--sim", help="start the simulator and run on it (no configuration needed)")
    ] = False,
    speed: Annotated[
        float | None, typer.Option(help="simulator speed, experiment time / wall time (--sim only; default 500)")
    ] = None,
    runs: Annotated[
        Path | None,
        typer.Option(
            help="folder that holds one folder per run (default: the configuration's runs_dir, else the "
            "user data folder's rig/runs; see rig runs)"
        ),
    ] = None,
    socket: Annotated[Path | None, typer.Option(help="operator socket (default: per rig name)")] = None,
    headless: Annotated[
        bool, typer.Option("--headless", help="no display: JSON-lines log to the run folder and stderr")
    ] = False,
    resume_unfinished: Annotated[
        bool, typer.Option("--resume-unfinished", help="continue an unfinished run of this protocol if there is one")
    ] = False,
    sim_grace: Annotated[
        float,
        typer.Option(
            "--sim-grace",
            help="--sim: wall seconds the simulator waits for `rig resume RUN` if this process dies, then exits",
        ),
    ] = 600.0,
) -> None:
    """Run a protocol with the pressure held underneath; prints the coulombic efficiency at the end."""
    from rig.cli.run_cmd import run_command

    rc = run_command(
        file,
        config=config,
        sim=sim,
        speed=speed,
        runs_root=runs,
        console=Console(),
        err=Console(stderr=True),
        socket_path=socket,
        headless=headless,
        resume_unfinished=resume_unfinished,
        orphan_grace_s=sim_grace,
    )
    if rc:
        raise typer.Exit(rc)


@app.command()
def safe(
    run_dir: Annotated[
        Path | None, typer.Argument(help="a run (folder or name): its rig, and the charge since its last record")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="rig configuration (TOML)")] = None,
    release: Annotated[
        bool, typer.Option("--release", help="also release the stack to zero force (default: hold the press)")
    ] = False,
) -> None:
    """Make a rig safe without its controller: output off (HIGH-Z) and read back, press held (or released).

    Never starts or resumes a run; refused while a controller owns the rig (use `rig abort` for that)."""
    from rig.cli.safe_cmd import safe_command

    named = None if run_dir is None else _named_run(run_dir)
    rc = safe_command(named, config, release=release, console=Console(), err=Console(stderr=True))
    if rc:
        raise typer.Exit(rc)


_NO_CONTROLLER_ABORT = (
    "; to make a rig safe without its controller: rig safe --config RIG.toml (or rig safe RUN_FOLDER)"
)


def _operator(cmd: str, rig_name: str | None, socket_path: Path | None) -> None:
    """Send one command to a running controller: the named rig, or the only one running (several: none)."""
    from rig.remote.operator_socket import default_socket, running_rigs, runtime_dir, send_command

    err = Console(stderr=True)
    if socket_path is not None:
        path = socket_path
    elif rig_name is not None:
        path = default_socket(rig_name)
    else:
        live = running_rigs()
        if not live:
            err.print(
                f"{cmd}: no rig controller is running (none answers in {runtime_dir()})"
                + (_NO_CONTROLLER_ABORT if cmd == "abort" else ""),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1)
        if len(live) > 1:
            err.print(
                f"{cmd}: {len(live)} rigs are running: {', '.join(live)}; name one with --rig NAME (nothing was sent)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(2)
        rig_name, path = next(iter(live.items()))
    try:
        reply = send_command(path, cmd)
    except (ConnectionError, OSError) as exc:
        who = f"rig {rig_name!r}" if rig_name is not None else str(path)
        err.print(
            f"{cmd}: no controller of {who} answers ({exc})" + (_NO_CONTROLLER_ABORT if cmd == "abort" else ""),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from exc
    Console().print_json(data={"rig": rig_name, **reply} if rig_name is not None else reply)
    if not reply.get("ok"):
        raise typer.Exit(1)


_RIG_OPT = typer.Option("--rig", help="rig name (its [rig] name); default: the one rig running")
_SOCK_OPT = typer.Option("--socket", help="operator socket of the running rig")


@app.command()
def pause(
    rig_name: Annotated[str | None, _RIG_OPT] = None, socket: Annotated[Path | None, _SOCK_OPT] = None
) -> None:
    """Pause the running protocol: current off, pressure held."""
    _operator("pause", rig_name, socket)


@app.command()
def resume(
    run_dir: Annotated[
        Path | None, typer.Argument(help="a killed run (folder or name): continue it (without: resume a paused run)")
    ] = None,
    rig_name: Annotated[str | None, _RIG_OPT] = None,
    socket: Annotated[Path | None, _SOCK_OPT] = None,
    headless: Annotated[bool, typer.Option("--headless", help="JSON-lines log instead of the display")] = False,
) -> None:
    """Resume a paused run (current returns once the pressure is back in band), or continue a killed RUN_DIR."""
    if run_dir is None:
        _operator("resume", rig_name, socket)
        return
    from rig.cli.run_cmd import resume_command

    rc = resume_command(
        _named_run(run_dir), console=Console(), err=Console(stderr=True), socket_path=socket, headless=headless
    )
    if rc:
        raise typer.Exit(rc)


@app.command()
def ack(
    rig_name: Annotated[str | None, _RIG_OPT] = None, socket: Annotated[Path | None, _SOCK_OPT] = None
) -> None:
    """Acknowledge a latched over-force trip (the run then ends in the safe state)."""
    _operator("ack", rig_name, socket)


@app.command()
def abort(
    rig_name: Annotated[str | None, _RIG_OPT] = None, socket: Annotated[Path | None, _SOCK_OPT] = None
) -> None:
    """Abort the running protocol: the rig goes to its safe state."""
    _operator("abort", rig_name, socket)


@app.command()
def status(
    rig_name: Annotated[str | None, _RIG_OPT] = None, socket: Annotated[Path | None, _SOCK_OPT] = None
) -> None:
    """Show the running protocol's state."""
    _operator("status", rig_name, socket)


@app.command()
def campaign(
    files: Annotated[list[Path], typer.Argument(help="protocols (YAML), each on a fresh cell")],
    sim: Annotated[bool, typer.Option("--sim", help="run on the simulator (required for now)")] = False,
    speed: Annotated[float, typer.Option(help="simulator speed")] = 500.0,
    parallel: Annotated[int, typer.Option(help="runs at once (each has its own simulator process)")] = 1,
    runs: Annotated[
        Path | None,
        typer.Option(help="folder for the campaign's runs (default: campaign-<UTC time> in the user's runs folder)"),
    ] = None,
) -> None:
    """Run several protocols in turn and print ICE against pressure per electrolyte (the paper's Fig. 1a/b)."""
    from rig.cli.campaign_cmd import ice_table, load_entries, run_campaign
    from rig.data.paths import campaign_folder, resolve_runs_root

    console, err = Console(), Console(stderr=True)
    if not sim:
        err.print("a campaign on real hardware needs a fresh cell per protocol: run them one by one with rig run")
        raise typer.Exit(2)
    entries = load_entries(files, err)
    if entries is None:
        raise typer.Exit(2)
    folder = runs.expanduser() if runs is not None else campaign_folder(resolve_runs_root(None, None))
    console.print(f"campaign folder: {folder}", highlight=False, soft_wrap=True)
    run_campaign(entries, speed=speed, parallel=parallel, runs_root=folder, console=console)
    for table in ice_table(entries):
        console.print(table)
    if any(e.state != "completed" for e in entries):
        raise typer.Exit(1)


_RUNS_OPT = typer.Option(
    "--runs", help="the runs folder (default: the configuration's runs_dir, else the user data folder's rig/runs)"
)
_RUNS_CFG_OPT = typer.Option("--config", "-c", help="rig configuration: its [rig] runs_dir is the runs folder")


def _runs_root(runs: Path | None, config: Path | None) -> Path:
    from rig.data.paths import resolve_runs_root

    cfg = None
    if config is not None:
        try:
            cfg = load_config(config)
        except ConfigError as exc:
            Console(stderr=True).print(str(exc), markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from exc
    return resolve_runs_root(runs, cfg)


@app.command("runs")
def runs_cmd(
    runs: Annotated[Path | None, _RUNS_OPT] = None,
    config: Annotated[Path | None, _RUNS_CFG_OPT] = None,
    as_json: Annotated[bool, typer.Option("--json", help="a JSON list (with the unix start time) instead")] = False,
) -> None:
    """List the runs, newest first: started, rig, protocol, state, ICE, folder (and any problem)."""
    import json

    from rich.table import Table

    from rig.data.run_index import list_runs

    root = _runs_root(runs, config)
    entries = list_runs(root)
    if as_json:
        typer.echo(json.dumps([e.as_json() for e in entries], indent=2))
        return
    console = Console()
    if not entries:
        console.print(f"no runs in {root}", highlight=False, soft_wrap=True)
        return
    table = Table(title=f"runs in {root}", title_justify="left")
    for col in ("started (UTC)", "rig", "protocol", "state", "ICE", "folder", "note"):
        table.add_column(col, justify="right" if col == "ICE" else "left")
    colours = {"completed": "green", "aborted": "yellow", "failed": "red", "killed": "red", "unreadable": "red"}
    for e in entries:
        ice = "—" if e.ice is None else f"{100 * e.ice:.2f} %"
        note = e.problem or e.reason
        state = f"[{colours[e.state]}]{e.state}[/]" if e.state in colours else e.state
        table.add_row(e.started, e.rig, e.protocol, state, ice, e.name, note)
    console.print(table, highlight=False)


@app.command()
def show(
    run: Annotated[str, typer.Argument(help="a run folder, or its name (or a unique beginning) in the runs folder")],
    samples: Annotated[int, typer.Option("--samples", "-n", help="how many of the last samples to print")] = 10,
    runs: Annotated[Path | None, _RUNS_OPT] = None,
    config: Annotated[Path | None, _RUNS_CFG_OPT] = None,
) -> None:
    """One run without exporting it: summary, steps, events and alarms, the last samples (test time throughout)."""
    from rig.cli.show_cmd import RunNotFound, find_run, show_run

    root = _runs_root(runs, config)
    try:
        run_dir = find_run(run, root)
    except RunNotFound as exc:
        Console(stderr=True).print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    rc = show_run(run_dir, root=root, console=Console(), samples=max(0, samples))
    if rc:
        raise typer.Exit(rc)


def _mqtt_settings(broker: str, username: str | None, password: str | None, prefix: str, rig_id: str) -> Any:
    from rig.remote.telemetry import MqttSettings

    host, _, port = broker.rpartition(":")
    if not host:
        host, port = broker, "1883"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise typer.BadParameter(f"{broker!r}: expected HOST or HOST:PORT", param_hint="--broker")
    return MqttSettings(
        host=host,
        port=int(port),
        rig_id=rig_id,
        username=username,
        password=password if password is not None else os.environ.get("RIG_MQTT_PASSWORD"),
        prefix=prefix,
    )


_BROKER = typer.Option("--broker", help="MQTT broker host[:port]")
_USER = typer.Option("--username", help="broker account")
_PASS = typer.Option("--password", help="broker password (default: $RIG_MQTT_PASSWORD)")
_PREFIX = typer.Option("--prefix", help="topic prefix")


@app.command()
def watch(
    broker: Annotated[str, _BROKER] = "127.0.0.1:1883",
    username: Annotated[str | None, _USER] = None,
    password: Annotated[str | None, _PASS] = None,
    prefix: Annotated[str, _PREFIX] = "rig",
    duration: Annotated[float | None, typer.Option(help="stop after this many seconds")] = None,
) -> None:
    """The fleet view: every rig on the broker with its state, pressure and step."""
    from rig.cli.watch_cmd import BrokerError
    from rig.cli.watch_cmd import watch as do_watch

    settings = _mqtt_settings(broker, username, password, prefix, "watch")
    try:
        asyncio.run(do_watch(settings, Console(), duration_s=duration))
    except KeyboardInterrupt:
        pass
    except BrokerError as exc:
        Console(stderr=True).print(f"rig watch: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.command()
def send(
    command: Annotated[str, typer.Argument(help="pause, resume, abort or ack")],
    rig_id: Annotated[str, typer.Option("--rig", help="the rig's id on the broker")],
    broker: Annotated[str, _BROKER] = "127.0.0.1:1883",
    username: Annotated[str | None, _USER] = None,
    password: Annotated[str | None, _PASS] = None,
    prefix: Annotated[str, _PREFIX] = "rig",
    secret: Annotated[str | None, typer.Option(help="command signing secret (default: $RIG_COMMAND_SECRET)")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the rig's reply")] = 10.0,
) -> None:
    """Send one command to one rig over the broker and print its reply."""
    from rig.cli.watch_cmd import BrokerError
    from rig.cli.watch_cmd import send as do_send
    from rig.remote.commands import ALLOWED

    if command not in ALLOWED:
        Console(stderr=True).print(f"only {', '.join(sorted(ALLOWED))} can be sent", highlight=False)
        raise typer.Exit(2)
    settings = _mqtt_settings(broker, username, password, prefix, rig_id)
    key = secret or os.environ.get("RIG_COMMAND_SECRET")
    try:
        reply = asyncio.run(do_send(settings, command, rig_id, secret=key, timeout_s=timeout))
    except BrokerError as exc:
        Console(stderr=True).print(f"rig send: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    Console().print_json(data=reply)
    if not reply.get("ok"):
        raise typer.Exit(1)


def _named_run(path: Path) -> Path:
    """A run folder as given, else the run of that name (or unique beginning) in the runs folder (`rig runs`)."""
    if path.exists():
        return path
    from rig.cli.show_cmd import RunNotFound, find_run
    from rig.data.paths import resolve_runs_root

    root = resolve_runs_root(None, None)
    if (root / path).is_dir():
        return root / path
    try:
        return find_run(str(path), root)
    except RunNotFound:
        return path  # the command then says what is missing there


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="the run's folder, or its name in the runs folder (rig runs)")],
    fmt: Annotated[str, typer.Option("--format", help="bdf-csv or bdf-parquet")] = "bdf-csv",
    out: Annotated[Path | None, typer.Option("--out", help="output file (default: RUN_DIR/export/...)")] = None,
) -> None:
    """Export a run in the Battery Data Format (BDF columns, then the rig's own), with a metadata sidecar."""
    from rig.data.export import ExportError, export_run
    from rig.data.store import StoreError

    try:
        res = export_run(_named_run(run_dir), fmt=fmt, out=out)
    except (ExportError, StoreError) as exc:
        Console(stderr=True).print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    Console().print(
        f"{res.rows} rows -> {res.data_path}\nmetadata -> {res.metadata_path}\n"
        f"test-time drops repaired: {res.time_drops_repaired}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("report")
def report_cmd(
    run_dirs: Annotated[
        list[Path],
        typer.Argument(help="a run's folder (or its name in the runs folder); with --campaign, folders holding runs"),
    ],
    campaign: Annotated[
        bool, typer.Option("--campaign", help="ICE against pressure per electrolyte over every run found")
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default: <first folder>/report)")] = None,
) -> None:
    """PNG figures and a Markdown summary of a run (or, with --campaign, ICE against pressure over runs)."""
    from rig.data.report import ReportError, report_campaign, report_run
    from rig.data.store import StoreError

    try:
        if campaign:
            res = report_campaign([_named_run(d) for d in run_dirs], out=out)
        else:
            if len(run_dirs) != 1:
                Console(stderr=True).print("give one run folder (or --campaign for several)", highlight=False)
                raise typer.Exit(2)
            res = report_run(_named_run(run_dirs[0]), out=out)
    except (ReportError, StoreError) as exc:
        Console(stderr=True).print(str(exc), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from exc
    Console().print(f"summary -> {res.markdown}", highlight=False, soft_wrap=True)
    for fig in res.figures:
        Console().print(f"figure  -> {fig}", highlight=False, soft_wrap=True)
