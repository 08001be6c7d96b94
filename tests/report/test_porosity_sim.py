"""The operando porosity estimate tracks the simulator's ground truth, at 10 kPa and at the optimum.

Each case owns its simulator process (so the ground truth can be read after the run has ended) and runs
`rig run --config <its rig config>` on it with the library protocol: settle, 10 min rest at pressure, plate
1 mAh/cm² at 0.5 mA/cm², strip to 1 V.

Tolerances. The estimate's error is the load cell's slow drift: the controller holds the *measured* force, so a
drift moves the true force, and that reads as stack thickness through the series compliance (bench/porosity.py
shows the estimate following truth − ΔF_true/k exactly). The simulated cell drifts as a random walk of
0.0008 N/√s (~0.03 N per 20 min, the reference's "a few grams per 15–30 min"): over the ~2 h of plating that is
σ ≈ 0.07 N, ≈ 3 µm on a ~0.023 N/µm stack, of which fitting plate and strip together keeps about 2 µm. In
porosity, σ_φ ≈ (1 − φ)·σ_h / h ≈ 0.05 for EC:DMC at 10 kPa (a 20 µm deposit, φ = 0.55): asserted within 0.15.
At the optimum (a dense 8.9 µm deposit while the held stack creeps by about as much) σ_φ ≈ 0.2 from the drift
alone, and creep and drift are confounded: runs have come out between −1.3 and +0.06 against a truth of 0, so
only the ordering is asserted there (denser than the 10 kPa carbonate deposit by a clear margin) and the value
is printed. See the report of the work for the bench numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hardware_sim.control_port import control_request
from protocols.validate import validate_protocol
from rig.analysis import analyse_deposit
from rig.store import read_samples
from rig.validate_cmd import default_limits

LIB = Path(__file__).parents[2] / "protocols" / "library"
SPEED = 500.0


def _run_on_own_simulator(protocol: Path, electrolyte: str, tmp: Path) -> tuple[Path, dict[str, Any]]:
    ready, cfg = tmp / "sim-ready.json", tmp / "sim-rig.toml"
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hardware_sim",
            "--speed",
            str(SPEED),
            "--electrolyte",
            electrolyte,
            "--config-out",
            str(cfg),
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert sim.poll() is None and time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.05)
        control = json.loads(ready.read_text())["control"]
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "from rig.cli import app; app()",
                "run",
                str(protocol),
                "--config",
                str(cfg),
                "--runs",
                str(tmp / "runs"),
                "--socket",
                str(tmp / "op.sock"),
            ],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        truth: dict[str, Any] = control_request(control, {"cmd": "state"})["state"]
    finally:
        sim.terminate()
        sim.wait(10)
    (run_dir,) = [d for d in (tmp / "runs").iterdir() if d.is_dir()]
    return run_dir, truth


def _estimate(run_dir: Path) -> float:
    text = (run_dir / "protocol.yaml").read_text()
    plan = validate_protocol(text, str(run_dir / "protocol.yaml"), default_limits())
    dep = analyse_deposit(read_samples(run_dir / "run.sqlite"), plan)
    assert dep is not None
    return dep.fit.porosity


def test_porosity_estimate_tracks_the_simulator_at_10_kpa_and_at_the_optimum(tmp_path: Path) -> None:
    cases = {
        "ec-dmc 10 kPa": (LIB / "ecdmc_10kpa_plate_strip.yaml", "ec-dmc"),
        "dme 180 kPa": (LIB / "dme_180kpa_plate_strip.yaml", "dme"),
    }
    for name in cases:
        (tmp_path / name.replace(" ", "-")).mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            name: pool.submit(_run_on_own_simulator, proto, el, tmp_path / name.replace(" ", "-"))
            for name, (proto, el) in cases.items()
        }
        results = {name: f.result() for name, f in futures.items()}
    est: dict[str, float] = {}
    truth: dict[str, float] = {}
    for name, (run_dir, state) in results.items():
        est[name] = _estimate(run_dir)
        truth[name] = state["deposit_porosity"]
    report = ", ".join(f"{n}: estimate {est[n]:.3f}, truth {truth[n]:.3f}" for n in cases)
    assert truth["ec-dmc 10 kPa"] > 0.5 and truth["dme 180 kPa"] < 0.01, report  # the model's own values
    print(f"\noperando porosity: {report}")
    assert abs(est["ec-dmc 10 kPa"] - truth["ec-dmc 10 kPa"]) < 0.15, report
    assert est["dme 180 kPa"] < est["ec-dmc 10 kPa"] - 0.3, report  # the dense deposit reads as denser
