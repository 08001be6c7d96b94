"""The `rig` command line: one module per command group; `app` holds the Typer application (`rig.cli.app:app`)."""
