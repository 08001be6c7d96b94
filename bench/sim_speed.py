"""Experiment-seconds per wall-second of a full plate/strip driven over the wire (no controller yet).

The simulator runs as its own process. Our drivers (Keithley 2450 over pyvisa-py, load cell over Modbus RTU)
drive a 0.5 mA/cm² plate to 1 mAh/cm² and a strip to 1 V, reading the potentiostat and the load cell in turn as
fast as the wire allows; charge is counted on the simulator's own clock (the 2450's relative timestamp).

Printed per run: wall time, experiment time, experiment-s per wall-s, poll rate, experiment seconds between
samples, the ICE counted over the wire beside the model's ground truth, and the simulator's CPU share.
The baseline each row is compared to is the requested speed (what a perfect simulator would deliver).
Also printed: the physics alone (in-process, no wire), experiment seconds integrated per CPU second.

    python bench/sim_speed.py [--speeds 300,3000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.interfaces import GalvanostaticConfig
from hardware_sim.clock import ManualClock
from hardware_sim.control_port import control_request
from hardware_sim.model import RigModel
from hardware_sim.params import C_PER_MAH, SimParams
from rig.clock import ExperimentClock
from rig.config import load_config
from rig.devices import build_devices
from tests.sim.sim_process import sim_process

J_A_CM2 = 0.5e-3
Q_AREAL_C_CM2 = 1.0 * C_PER_MAH


@dataclass
class Row:
    timing: str
    speed: float
    wall_s: float
    exp_s: float
    samples: int
    ice_wire: float
    ice_truth: float
    sim_cpu: float


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(config: Path, control: str) -> tuple[float, float, int, float]:
    cfg = load_config(config)
    devs = build_devices(cfg, clock=ExperimentClock(cfg.clock.speed))
    pot, force = devs.potentiostat, devs.force
    area = cfg.rig.area_cm2
    i_a = J_A_CM2 * area
    samples = 0
    try:
        await pot.connect()
        await force.connect()
        await pot.verify_safe(3.0)
        await pot.configure_galvanostatic(GalvanostaticConfig(current_a=-i_a, voltage_limit_v=3.0))
        q_plate = q_strip = 0.0
        await pot.output(True)
        first = await pot.read()
        w0 = time.perf_counter()
        t_prev = t_start = first.instrument_time_s or 0.0
        i_prev = first.current_a
        phase = "plate"
        while True:
            r = await pot.read()
            await force.read()
            samples += 1
            t = r.instrument_time_s or 0.0
            dq = 0.5 * (r.current_a + i_prev) * (t - t_prev)
            t_prev, i_prev = t, r.current_a
            if phase == "plate":
                q_plate += -dq
                if q_plate >= Q_AREAL_C_CM2 * area:
                    phase = "strip"
                    await pot.set_current_a(i_a)
                    i_prev = i_a
            else:
                q_strip += dq
                if r.valid and r.voltage_v() >= 1.0:
                    break
        wall = time.perf_counter() - w0
        await pot.output(False)
        return t - t_start, q_strip / q_plate, samples, wall
    finally:
        await devs.close()


def run_wire(speed: float, timing: bool) -> Row:
    """One full plate/strip against a simulator process at `speed`."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["--speed", str(speed), "--pressure-pin-kpa", "180"]
        if not timing:
            args.append("--no-line-timing")
        with sim_process(Path(tmp), *args) as sim:
            cpu0 = _cpu_s(sim.proc.pid)
            w0 = time.perf_counter()
            exp_s, ice, samples, wall = asyncio.run(_drive(sim.config_path, sim.control))
            cpu = (_cpu_s(sim.proc.pid) - cpu0) * wall / (time.perf_counter() - w0)
            truth = control_request(sim.control, {"cmd": "state"})["state"]
    ice_truth = truth["stripped_c"] / truth["plated_c"]
    return Row("on" if timing else "off", speed, wall, exp_s, samples, ice, ice_truth, cpu / wall)


def physics_only() -> float:
    """Experiment seconds of a plate/strip the physics integrates per CPU second, in-process."""
    clock = ManualClock()
    model = RigModel(SimParams(), clock=clock)
    model.pin_pressure_kpa = 180.0
    i_a = J_A_CM2 * model.area_cm2
    c0 = time.process_time()
    model.set_source("current", current_a=-i_a, voltage_limit_v=3.0)
    clock.advance(7200.0)
    model.measure()
    model.set_source("current", current_a=i_a, voltage_limit_v=3.0)
    while model.measure().voltage_v < 1.0:
        clock.advance(10.0)
    return clock.now() / max(time.process_time() - c0, 1e-9)


def main() -> None:
    """Run the benchmark and print its table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--speeds", default="300,3000", help="comma-separated simulator speeds")
    ap.add_argument("--quick", action="store_true", help="one speed (3000) only")
    args = ap.parse_args()
    speeds = [3000.0] if args.quick else [float(s) for s in args.speeds.split(",")]
    rows = [run_wire(s, timing) for timing in (True, False) for s in speeds]
    print("plate 0.5 mA/cm² to 1 mAh/cm², strip to 1 V, Ø12 mm, DME, pressure pinned at 180 kPa; 115200 baud line")
    head = (
        f"{'baud emul.':>10} {'speed (baseline)':>16} {'wall s':>8} {'exp s':>8} {'exp-s/wall-s':>12} "
        f"{'polls/s':>8} {'exp-s/sample':>12} {'ICE wire':>9} {'ICE truth':>9} {'sim CPU':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.timing:>10} {r.speed:>16.0f} {r.wall_s:>8.1f} {r.exp_s:>8.0f} {r.exp_s / r.wall_s:>12.0f} "
            f"{r.samples / r.wall_s:>8.1f} {r.exp_s / max(r.samples, 1):>12.2f} {100 * r.ice_wire:>8.2f}% "
            f"{100 * r.ice_truth:>8.2f}% {100 * r.sim_cpu:>7.0f}%"
        )
    print(f"physics alone (in-process, no wire): {physics_only():,.0f} experiment-s per CPU-s")


if __name__ == "__main__":
    main()
