"""Run the `rig` command line in a subprocess, as an operator would, for tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: `rig` through the interpreter running the tests (the same install, whatever PATH says)
RIG = [sys.executable, "-c", "from rig.cli.app import app; app()"]
#: the checkout under test: `python -c` imports from the working directory, so a test that runs `rig` elsewhere
#: puts this first on PYTHONPATH (an installed copy of another checkout must not answer instead)
REPO = Path(__file__).resolve().parents[2]


def rig_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The test's environment with its own operator-socket folder and user data folder under `tmp` (so the default
    runs folder, `<user data>/rig/runs`, is the test's own, never the real one), and `extra` on top."""
    env = os.environ.copy()
    env["XDG_RUNTIME_DIR"] = str(tmp / "xdg")
    (tmp / "xdg").mkdir(exist_ok=True)
    env["XDG_DATA_HOME"] = str(tmp / "xdg-data")
    env.update(extra)
    return env


def run_rig(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`rig ARGS`, its output captured; raises on the timeout (`cwd`: run it there, this checkout's code still)."""
    if cwd is not None:
        env = dict(os.environ if env is None else env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run([*RIG, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
