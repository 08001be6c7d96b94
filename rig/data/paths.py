"""Where runs are kept: one folder per user, not `./runs` of wherever the operator stood (docs/decisions/0024).

The runs folder is, in this order: the `--runs` option; the rig configuration's `[rig] runs_dir`; the user data
folder of `platformdirs` with `runs/` in it (`$XDG_DATA_HOME/rig/runs`, by default `~/.local/share/rig/runs`,
on Linux; `~/Library/Application Support/rig/runs` on macOS; `%LOCALAPPDATA%\\rig\\runs` on Windows).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import platformdirs

from rig.config import RigConfig

__all__ = ["campaign_folder", "default_runs_root", "resolve_runs_root"]


def default_runs_root() -> Path:
    """The user's own runs folder: `<user data folder>/rig/runs`."""
    return platformdirs.user_data_path("rig") / "runs"


def resolve_runs_root(explicit: Path | None, cfg: RigConfig | None) -> Path:
    """The runs folder: `explicit` (the `--runs` option) if given, else the configuration's, else the default."""
    if explicit is not None:
        return explicit.expanduser()
    if cfg is not None and cfg.rig.runs_dir is not None:
        return cfg.rig.runs_dir
    return default_runs_root()


def campaign_folder(runs_root: Path, *, now: dt.datetime | None = None) -> Path:
    """A new campaign's folder under the runs folder: `campaign-<UTC time>` (a suffix if that exists already)."""
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d-%H%M%S")
    path = runs_root / f"campaign-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = runs_root / f"campaign-{stamp}-{n}"
    return path
