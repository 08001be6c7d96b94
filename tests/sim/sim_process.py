"""Start the simulator as its own process (`python -m hardware_sim`), as an operator would, for tests."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class SimProcess:
    """A running simulator process and what it printed."""

    proc: subprocess.Popen[str]
    endpoints: dict[str, str]
    config_path: Path

    @property
    def control(self) -> str:
        """host:port of its control port."""
        return self.endpoints["control"]


@contextlib.contextmanager
def sim_process(tmp: Path, *args: str, start_timeout_s: float = 30.0, launcher: str = "module") -> Iterator[SimProcess]:
    """Run `python -m hardware_sim ARGS` (or `rig sim ARGS`) until the block ends; yields once it listens."""
    ready = tmp / "sim-ready.json"
    config = tmp / "sim-rig.toml"
    log = (tmp / "sim.log").open("w")
    if launcher == "rig":
        rig = shutil.which("rig")
        if rig is None:
            raise RuntimeError("the 'rig' command is not installed (pip install -e .)")
        head = [rig, "sim"]
    else:
        head = [sys.executable, "-m", "hardware_sim"]
    cmd = [*head, *args, "--config-out", str(config), "--ready-file", str(ready)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + start_timeout_s
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"simulator exited with {proc.returncode}: {(tmp / 'sim.log').read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"simulator not ready after {start_timeout_s} s: {(tmp / 'sim.log').read_text()}")
            time.sleep(0.05)
        endpoints = json.loads(ready.read_text())
        yield SimProcess(proc=proc, endpoints=endpoints, config_path=config)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
