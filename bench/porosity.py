"""Operando deposit thickness and porosity against the simulator's ground truth, at 10 kPa and at the optimum.

For each case a simulator process is started here (so its ground truth can be read while and after the run),
`rig run --config <its rig config>` runs a library protocol on it (plate 1 mAh/cm², strip to 1 V), and the
truth (deposit thickness and porosity) is polled from its control port. The estimate is `rig.data.analysis`'s
whole-run fit over the recorded samples (press position corrected for compliance and creep); the live value is
what the run recorded in its `deposit_um` column at the end of plating.

    python bench/porosity.py [--speed 500] [--cases dme-10,dme-180,ecdmc-10,ecdmc-250] [--seeds 1,2,3]
                             [--stiffness 1,10] [--parallel 1]

`--seeds` are the simulator's sensor-noise seeds (each draws another load-cell drift); `--stiffness` scales the
stack and spring (1: the soft disc spring of the default rig; 10: a stiff load path). Each row also shows the
estimate's own 1σ interval from the load cell's drift (`rig.data.porosity.drift_uncertainty`), and the summary how
often the truth fell inside it.

The porosity numbers away from the optima are the simulator's model (docs/decisions/0004), not measurements.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardware_sim.control_port import control_request
from protocols.validate import validate_protocol
from rig.cli.validate_cmd import recorded_run_limits
from rig.config import LoadCellConfig
from rig.data.analysis import analyse_deposit, net_charge_c, step_kinds
from rig.data.porosity import C_PER_MAH
from rig.data.store import read_samples

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "protocols" / "library"
CASES = {
    "dme-10": ("dme", LIB / "dme_10kpa_plate_strip.yaml"),
    "dme-180": ("dme", LIB / "dme_180kpa_plate_strip.yaml"),
    "ecdmc-10": ("ec-dmc", LIB / "ecdmc_10kpa_plate_strip.yaml"),
    "ecdmc-250": ("ec-dmc", LIB / "ecdmc_250kpa_plate_strip.yaml"),
}


@dataclass
class Truth:
    """The simulator's ground truth, polled during the run."""

    deposit_um_max: float = 0.0
    porosity_at_max: float = float("nan")
    porosity_at_pressure: float = float("nan")
    polls: int = 0
    errors: list[str] = field(default_factory=list)
    series: list[tuple[float, float, float, float]] = field(default_factory=list)  # t, deposit, creep, force


def _poll(control: str, truth: Truth, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            st: dict[str, Any] = control_request(control, {"cmd": "state"})["state"]
        except (OSError, ValueError, KeyError) as exc:
            truth.errors.append(str(exc))
            time.sleep(0.2)
            continue
        truth.polls += 1
        truth.series.append((st["t_s"], st["deposit_um"], st["creep_um"], st["force_n"]))
        if st["current_a"] < 0 or st["deposit_um"] >= truth.deposit_um_max:
            if st["deposit_um"] >= truth.deposit_um_max:
                truth.deposit_um_max = st["deposit_um"]
                truth.porosity_at_max = st["deposit_porosity"]
                truth.porosity_at_pressure = st["porosity_at_pressure"]
        time.sleep(0.05)


def run_case(
    name: str, *, speed: float, workdir: Path, protocol: Path | None = None, seed: int = 1, stiffness: float = 1.0
) -> dict[str, Any]:
    """One case: simulator, rig run, truth, estimate."""
    electrolyte, default_protocol = CASES[name]
    protocol = protocol or default_protocol
    wd = workdir / f"{name}-k{stiffness:g}-s{seed}"
    wd.mkdir(parents=True, exist_ok=True)
    ready, cfg = wd / "sim-ready.json", wd / "sim-rig.toml"
    sim = subprocess.Popen(
        [
            *(sys.executable, "-m", "hardware_sim", "--speed", str(speed), "--electrolyte", electrolyte),
            *("--seed", str(seed), "--stiffness-scale", str(stiffness)),
            *("--config-out", str(cfg), "--ready-file", str(ready)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    truth = Truth()
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            if sim.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name}: the simulator did not start")
            time.sleep(0.05)
        control = json.loads(ready.read_text())["control"]
        poller = threading.Thread(target=_poll, args=(control, truth, stop), daemon=True)
        poller.start()
        t0 = time.monotonic()
        out = subprocess.run(
            [
                *(sys.executable, "-c", "from rig.cli.app import app; app()", "run", str(protocol)),
                *("--config", str(cfg)),
                *("--runs", str(wd / "runs"), "--socket", str(wd / "op.sock")),
            ],
            capture_output=True,
            text=True,
        )
        wall_s = time.monotonic() - t0
        stop.set()
        poller.join(5)
    finally:
        stop.set()
        sim.terminate()
        sim.wait(10)
    run_dir = next(d for d in (wd / "runs").iterdir() if d.is_dir())
    (wd / "truth.json").write_text(json.dumps(truth.series))
    plan = validate_protocol(protocol.read_text(), str(protocol), recorded_run_limits())
    samples = read_samples(run_dir / "run.sqlite")
    est = analyse_deposit(samples, plan)
    unc = est.uncertainty(LoadCellConfig.model_fields["drift_n_per_sqrt_s"].default) if est else None
    q_net = net_charge_c(samples, step_kinds(plan))
    i_peak = max(range(len(samples)), key=lambda i: q_net[i])
    live = next((s.deposit_um for s in reversed(samples[: i_peak + 1]) if s.deposit_um is not None), None)
    q_peak = q_net[i_peak] / C_PER_MAH / (plan.electrode_area_m2 * 1e4)
    return {
        "case": name,
        "seed": seed,
        "stiffness": stiffness,
        "sigma_porosity": unc.sigma_porosity if unc else float("nan"),
        "porosity_low": unc.porosity_low if unc else float("nan"),
        "porosity_high": unc.porosity_high if unc else float("nan"),
        "pressure_kpa": est.pressure_pa / 1e3 if est else float("nan"),
        "rc": out.returncode,
        "wall_s": wall_s,
        "truth_porosity": truth.porosity_at_max,
        "truth_um": truth.deposit_um_max,
        "est_porosity": est.fit.porosity if est else float("nan"),
        "est_um": est.fit.deposit_um(q_peak) if est else float("nan"),
        "live_um": live,
        "creep_um": est.fit.creep_um(est.points[-1].t_s) if est else float("nan"),  # removed over the window
        "rms_um": est.fit.rms_um if est else float("nan"),
        "run_dir": str(run_dir),
    }


def main() -> None:
    """Run the cases and print estimate vs truth."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speed", type=float, default=500.0)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--seeds", default="1", help="simulator seeds, comma-separated")
    ap.add_argument("--stiffness", default="1", help="stiffness scales, comma-separated")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--parallel", type=int, default=1, help="cases at once (each is two processes)")
    args = ap.parse_args()
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    scales = [float(x) for x in args.stiffness.split(",") if x.strip()]
    jobs = [(n, k, sd) for k in scales for n in names for sd in seeds]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-porosity-"))
    done = 0

    def one(job: tuple[str, float, int]) -> dict[str, Any]:
        nonlocal done
        n, k, sd = job
        r = run_case(n, speed=args.speed, workdir=workdir, seed=sd, stiffness=k)
        done += 1
        print(f"  [{done}/{len(jobs)}] {n} stiffness x{k:g} seed {sd}: rc {r['rc']}, {r['wall_s']:.0f} s", flush=True)
        return r

    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        results = list(pool.map(one, jobs))
    print(f"operando porosity vs the simulator's ground truth (speed {args.speed:g}x; runs in {workdir})")
    print(
        "case        k×  seed  P/kPa  truth φ  est. φ   error φ  est. 1σ interval  in 1σ | truth µm  est. µm  live µm "
        "| creep removed µm  rms µm  rc"
    )
    for r in results:
        live = "—" if r["live_um"] is None else f"{r['live_um']:7.2f}"
        inside = r["porosity_low"] <= r["truth_porosity"] <= r["porosity_high"]
        print(
            f"{r['case']:<10} {r['stiffness']:3g}  {r['seed']:4d}  {r['pressure_kpa']:5.0f}  "
            f"{r['truth_porosity']:7.3f}  "
            f"{r['est_porosity']:7.3f}  {r['est_porosity'] - r['truth_porosity']:+7.3f}  "
            f"{r['porosity_low']:+7.2f} … {r['porosity_high']:+5.2f}  {'yes' if inside else 'no ':>5} | "
            f"{r['truth_um']:8.2f}  {r['est_um']:7.2f}  {live:>7} | "
            f"{r['creep_um']:16.2f}  {r['rms_um']:6.2f}  {r['rc']}"
        )
    print("\nby case (over seeds): mean error, rms error, median estimated 1σ, truth inside the 1σ interval")
    for k in scales:
        for n in names:
            rows = [r for r in results if r["case"] == n and r["stiffness"] == k]
            errs = [r["est_porosity"] - r["truth_porosity"] for r in rows]
            sig = sorted(r["sigma_porosity"] for r in rows)
            inside = sum(r["porosity_low"] <= r["truth_porosity"] <= r["porosity_high"] for r in rows)
            rms = (sum(e * e for e in errs) / len(errs)) ** 0.5
            print(
                f"{n:<10} x{k:<3g} mean {sum(errs) / len(errs):+.3f}  rms {rms:.3f}  "
                f"1σ {sig[len(sig) // 2]:.3f}  inside {inside}/{len(rows)}"
            )


if __name__ == "__main__":
    main()
