"""The `rig` command."""

from __future__ import annotations

import os
import subprocess
import sys

import typer

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
    cmd = [sys.executable, "-m", "hardware_sim", *ctx.args]
    try:
        rc = subprocess.call(cmd, env=os.environ.copy())
    except KeyboardInterrupt:
        rc = 130
    raise typer.Exit(rc)
