"""Run the `rig` command line in a subprocess, as an operator would, for tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: `rig` through the interpreter running the tests (the same install, whatever PATH says)
RIG = [sys.executable, "-c", "from rig.cli import app; app()"]


def rig_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The test's environment with its own operator-socket folder under `tmp` (and `extra` on top)."""
    env = os.environ.copy()
    env["XDG_RUNTIME_DIR"] = str(tmp / "xdg")
    (tmp / "xdg").mkdir(exist_ok=True)
    env.update(extra)
    return env


def run_rig(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`rig ARGS`, its output captured; raises on the timeout."""
    return subprocess.run([*RIG, *args], capture_output=True, text=True, env=env, timeout=timeout)
