"""`rig report RUN_DIR` and `rig report --campaign DIR...`: PNG figures and a short Markdown summary.

A run's report (in `RUN_DIR/report/`):
- `pressure.png`: measured pressure against test time with the setpoint and the tolerance band, plate/strip shaded;
- `voltage_capacity.png`: voltage against areal capacity for each plate and strip;
- `ce.png`: coulombic efficiency per cycle;
- `thickness.png`: operando deposit thickness against net charge (press position corrected for compliance and
  creep; `rig.data.porosity`), with the dense-Na line and the fitted apparent porosity;
- `report.md`: outcome, CE table, deposit, alarms, pauses and resumes, the figures.

Every time is test time from the start of the run (the experiment clock starts at 0 when `rig run` starts the run
and a resumed run continues it): the figures, `report.md`, the BDF export and `rig show` give the same numbers.
Every porosity is printed through `rig.data.analysis.PorosityVerdict` (a value within 0–100 % or "not resolved: why").

A campaign's report: ICE against pressure per electrolyte (the analogue of the paper's Fig. 1a/b) with the
paper's optima marked; simulated values are labelled as the simulator's model.

matplotlib (Agg backend) is an optional dependency: `pip install 'rig[report]'`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protocols.errors import ProtocolError
from protocols.plan import Plan, PlannedPlate, PlannedPressure, PlannedStrip
from protocols.validate import validate_protocol
from rig.cli.run_cmd import electrolyte_key
from rig.cli.validate_cmd import recorded_run_limits
from rig.data.analysis import (
    DepositAnalysis,
    DepositAssessment,
    PorosityVerdict,
    assess_deposit,
    load_cell_drift,
    net_charge_c,
    porosity_verdict,
    step_kinds,
    step_traces,
)
from rig.data.export import monotonic_test_time
from rig.data.porosity import C_PER_MAH, NA_DENSE_UM_PER_MAH_CM2, DriftUncertainty
from rig.data.run_index import read_entry
from rig.data.store import FLAG_PAUSED, Sample, is_simulated_run, read_events, read_meta, read_samples

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PAPER_OPTIMA = {"dme": (180.0, 0.882), "ec-dmc": (250.0, 0.861)}
ELECTROLYTE_NAMES = {"dme": "1 M NaPF$_6$ in DME", "ec-dmc": "1 M NaPF$_6$ in EC:DMC"}
_PLATE_COLOUR = "#1f77b4"
_STRIP_COLOUR = "#d62728"


class ReportError(Exception):
    """The report cannot be made; the message says why."""


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ReportError("rig report needs matplotlib: pip install 'rig[report]'") from exc
    plt.rcParams.update(
        {
            "font.size": 11,
            "axes.titlesize": 12,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "figure.dpi": 110,
            "savefig.bbox": "tight",
        }
    )
    return plt


# ----------------------------------------------------------------------------------------------- loading


@dataclass
class RunData:
    """Everything a report needs from one run folder."""

    run_dir: Path
    plan: Plan
    samples: list[Sample]
    events: list[dict[str, Any]]
    meta: dict[str, str]
    summary: dict[str, Any]
    simulated: bool
    state: str = "completed"  # as `rig runs` has it: completed, aborted, failed, killed, running, …

    @property
    def area_cm2(self) -> float:
        """Working electrode area (cm²)."""
        return self.plan.electrode_area_m2 * 1e4

    @property
    def drift_n_per_sqrt_s(self) -> float:
        """The load cell's drift from the run's stored rig configuration (the default for runs without one)."""
        return load_cell_drift(self.meta)

    @property
    def electrolyte(self) -> str:
        """dme or ec-dmc (or the protocol's own text)."""
        return electrolyte_key(self.plan.electrolyte)

    @property
    def electro_pressure_kpa(self) -> float:
        """The pressure of the first plate or strip."""
        for s in self.plan.steps:
            if isinstance(s, PlannedPlate | PlannedStrip):
                return s.pressure_pa / 1e3
        return self.plan.steps[0].pressure_pa / 1e3 if self.plan.steps else math.nan


def load_run(run_dir: Path) -> RunData:
    """Read a run folder (database, protocol, summary)."""
    db = run_dir / "run.sqlite"
    if not db.exists():
        raise ReportError(f"{run_dir}: no run.sqlite here")
    meta = read_meta(db)
    text = meta.get("protocol_text")
    if text is None and (run_dir / "protocol.yaml").exists():
        text = (run_dir / "protocol.yaml").read_text(encoding="utf-8")
    if text is None:
        raise ReportError(f"{run_dir}: the run has no protocol")
    try:
        plan = validate_protocol(text, str(run_dir / "protocol.yaml"), recorded_run_limits())
    except ProtocolError as exc:
        raise ReportError(f"{run_dir}: the run's protocol does not validate: {exc}") from exc
    summary: dict[str, Any] = {}
    if (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text())
    simulated = is_simulated_run(run_dir, meta)
    state = read_entry(run_dir, root=run_dir.parent).state
    return RunData(run_dir, plan, read_samples(db), read_events(db), meta, summary, simulated, state)


def assess(run: RunData) -> DepositAssessment:
    """The run's deposit fit, its drift interval and what may be printed of its porosity."""
    return assess_deposit(run.samples, run.plan, drift_n_per_sqrt_s=run.drift_n_per_sqrt_s, run_state=run.state)


# ----------------------------------------------------------------------------------------------- figures


def _hours(samples: Sequence[Sample]) -> list[float]:
    """Test time from the start of the run, in hours: the BDF export's `Test Time / s` (`monotonic_test_time`)."""
    times, _ = monotonic_test_time([s.test_time_s for s in samples])
    return [t / 3600.0 for t in times]


def _shade_steps(ax: Axes, run: RunData, hours: list[float]) -> None:
    """Light background spans for plate (blue) and strip (red) steps."""
    kinds = step_kinds(run.plan)
    spans: list[tuple[str, float, float]] = []
    for s, h in zip(run.samples, hours, strict=True):
        kind = kinds.get(s.step_count, "")
        if spans and spans[-1][0] == f"{s.step_count}:{kind}":
            spans[-1] = (spans[-1][0], spans[-1][1], h)
        else:
            spans.append((f"{s.step_count}:{kind}", h, h))
    labelled: set[str] = set()
    for key, a, b in spans:
        kind = key.split(":", 1)[1]
        if kind in ("plate", "strip"):
            colour = _PLATE_COLOUR if kind == "plate" else _STRIP_COLOUR
            label = kind if kind not in labelled else None
            labelled.add(kind)
            ax.axvspan(a, b, color=colour, alpha=0.08, lw=0, label=label)


def _band_kpa(plan: Plan, step_count: int) -> float:
    """The tolerance band (± kPa) for a step: its own pressure step's tolerance, else the last one set."""
    tol = None
    for i, s in enumerate(plan.steps):
        if isinstance(s, PlannedPressure):
            tol = s.tolerance_pa / 1e3
        if i + 1 >= step_count:
            break
    return tol if tol is not None else 2.0


def figure_pressure(run: RunData) -> Figure:
    """Pressure against time with the setpoint; below, the deviation from the setpoint with the tolerance band."""
    plt = _plt()
    fig, (ax, dev) = plt.subplots(
        2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2], "hspace": 0.08}
    )
    hours = _hours(run.samples)
    prev_h = math.nan
    for a in (ax, dev):
        _shade_steps(a, run, hours)
    sp = [s.setpoint_pa / 1e3 if s.setpoint_pa is not None else math.nan for s in run.samples]
    p = [s.pressure_pa / 1e3 if s.pressure_pa is not None else math.nan for s in run.samples]
    band = [_band_kpa(run.plan, s.step_count) for s in run.samples]
    ax.plot(hours, sp, drawstyle="steps-post", color="k", lw=1.2, ls="--", label="setpoint")
    ax.plot(hours, p, color="#2ca02c", lw=1.0, label="measured")
    spans: list[list[float]] = []  # paused stretches [start, end] in hours
    for s, h in zip(run.samples, hours, strict=True):
        if s.flags & FLAG_PAUSED:
            if spans and spans[-1][1] == prev_h:
                spans[-1][1] = h
            else:
                spans.append([h, h])
        prev_h = h
    for i, (a, b) in enumerate(spans):
        for axis in (ax, dev):
            axis.axvspan(
                a, b, color="orange", alpha=0.35, lw=0, hatch="//", label="paused" if i == 0 and axis is ax else None
            )
    ax.set_ylabel("stack pressure / kPa")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Pressure held by the press: {run.plan.name}")
    ax.legend(loc="lower right", fontsize=9, ncols=3)
    # deviation, once the setpoint has been reached (the approach and ramp would swamp the scale)
    held = [abs(a - b) <= w for a, b, w in zip(p, sp, band, strict=True)]
    first = held.index(True) if True in held else len(held)
    d = [a - b if i >= first else math.nan for i, (a, b) in enumerate(zip(p, sp, strict=True))]
    dev.fill_between(
        hours, [-w for w in band], band, step="post", color="0.5", alpha=0.25, lw=0, label="tolerance band"
    )
    dev.axhline(0.0, color="k", lw=0.8, ls="--")
    dev.plot(hours, d, color="#2ca02c", lw=0.8, label="measured − setpoint")
    wmax = max(band) if band else 2.0
    finite = [abs(v) for v in d if not math.isnan(v)]
    dev.set_ylim(
        -max(2 * wmax, min(max(finite, default=0.0), 5 * wmax)), max(2 * wmax, min(max(finite, default=0.0), 5 * wmax))
    )
    dev.set_xlabel("test time from the start of the run / h")
    dev.set_ylabel("deviation / kPa")
    dev.legend(loc="lower right", fontsize=9, ncols=2)
    return fig


def figure_voltage_capacity(run: RunData) -> Figure:
    """Voltage against areal capacity, one line per plate and per strip."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    traces = step_traces(run.samples, run.plan)
    cycles = sorted({t.cycle for t in traces})
    cmap = plt.get_cmap("viridis")
    for tr in traces:
        shade = cmap(0.15 + 0.7 * (cycles.index(tr.cycle) / max(1, len(cycles) - 1)))
        colour = shade if len(cycles) > 1 else (_PLATE_COLOUR if tr.kind == "plate" else _STRIP_COLOUR)
        ls = "-" if tr.kind == "plate" else "--"
        ax.plot(tr.capacity_mah_cm2, tr.voltage_v, ls=ls, color=colour, lw=1.4, label=f"cycle {tr.cycle} {tr.kind}")
    ax.axhline(0.0, color="0.4", lw=0.8)
    cutoffs = [s.cutoff_v for s in run.plan.steps if isinstance(s, PlannedStrip)]
    if traces:
        lo = min(min(t.voltage_v) for t in traces)
        ax.set_ylim(min(-0.05, lo - 0.05), max(cutoffs, default=1.0) + 0.15)
    for c in sorted(set(cutoffs)):
        ax.axhline(c, color=_STRIP_COLOUR, lw=0.8, ls=":", label=f"strip cut-off {c:g} V")
    ax.set_xlabel("capacity / mAh cm$^{-2}$")
    ax.set_ylabel("voltage (Al vs Na) / V")
    ax.set_title(f"Plating and stripping at {run.electro_pressure_kpa:g} kPa: {run.plan.name}")
    if traces:
        ax.legend(fontsize=9, ncols=2 if len(traces) > 6 else 1)
    return fig


def cycle_table(run: RunData) -> list[tuple[int, float, float, float | None]]:
    """(cycle, plated mAh/cm², stripped mAh/cm², CE) from the step-end events (the engine's own charge count)."""
    kinds = step_kinds(run.plan)
    per: dict[int, list[float]] = {}
    for e in run.events:
        if e["kind"] != "step_end":
            continue
        i = e["data"].get("step")
        if i is None or not 0 <= i < len(run.plan.steps):
            continue
        step = run.plan.steps[i]
        kind = kinds.get(i + 1)
        pair = per.setdefault(step.cycle, [0.0, 0.0])
        q = float(e["data"].get("charge_c", 0.0)) / C_PER_MAH / run.area_cm2
        if kind == "plate":
            pair[0] += q
        elif kind == "strip":
            pair[1] += q
    rows = []
    for c in sorted(per):
        pl, st = per[c]
        rows.append((c, pl, st, st / pl if pl > 0 and st > 0 else None))
    return rows


def figure_ce(run: RunData) -> Figure:
    """Coulombic efficiency per cycle."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rows = [(c, ce) for c, _, _, ce in cycle_table(run) if ce is not None]
    if rows:
        xs = [c for c, _ in rows]
        ys = [100 * ce for _, ce in rows]
        ax.plot(xs, ys, "o-", color="#9467bd", ms=7)
        for x, y in zip(xs, ys, strict=True):
            ax.annotate(f"{y:.1f} %", (x, y), textcoords="offset points", xytext=(0, 8), ha="center", fontsize=9)
        ax.set_xticks(xs)
        ax.set_ylim(max(0.0, min(ys) - 8), min(105.0, max(ys) + 6))
        opt = PAPER_OPTIMA.get(run.electrolyte)
        if opt and abs(opt[0] - run.electro_pressure_kpa) < 1e-6:
            ax.axhline(100 * opt[1], color="goldenrod", ls=":", lw=1.5, label=f"paper ICE at {opt[0]:g} kPa")
            ax.legend(loc="lower right", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no complete plate/strip cycle", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("cycle")
    ax.set_ylabel("coulombic efficiency / %")
    ax.set_title("Coulombic efficiency per cycle (cycle 1 = ICE)")
    return fig


def _wrap(text: str, width: int = 70) -> str:
    """Break a long sentence for a figure's text box."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width, subsequent_indent="  "))


def figure_thickness(
    run: RunData,
    dep: DepositAnalysis | None,
    unc: DriftUncertainty | None = None,
    *,
    verdict: PorosityVerdict | None = None,
) -> Figure:
    """Deposit thickness against net charge: measured (creep removed), fit, dense Na, live values."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    if verdict is None:
        verdict = porosity_verdict(dep if dep is not None else "no deposit estimate", unc, run_state=run.state)
    if dep is None:
        why = _wrap(f"no deposit estimate: {verdict.why}")
        ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
    else:
        fit = dep.fit
        q = [p.q_mah_cm2 for p in dep.points]
        h = [fit.deposit_from_trace_um(p) for p in dep.points]
        ax.plot(q, h, ".", ms=2.5, color="0.45", alpha=0.6, label="press: compliance- and creep-corrected")
        q_max = max(q)
        xs = [0.0, q_max]
        label = f"fit: φ = {verdict.short()}" if verdict.resolved else "fit: φ not resolved"
        ax.plot(xs, [fit.deposit_um(x) for x in xs], color="#ff7f0e", lw=2.2, label=label)
        if unc is not None and math.isfinite(unc.sigma_um_per_mah_cm2):
            sig = unc.sigma_um_per_mah_cm2
            ax.fill_between(
                xs,
                [max(fit.um_per_mah_cm2 - sig, 0.0) * x for x in xs],
                [(fit.um_per_mah_cm2 + sig) * x for x in xs],
                color="#ff7f0e",
                alpha=0.18,
                lw=0,
                label=f"1σ from load-cell drift ({unc.drift_n_per_sqrt_s:g} N/√s, k {unc.stiffness_n_per_um:.3f} N/µm)",
            )
        ax.plot(xs, [NA_DENSE_UM_PER_MAH_CM2 * x for x in xs], "k--", lw=1.2, label="dense Na (8.86 µm per mAh/cm²)")
        kinds = step_kinds(run.plan)
        qn = net_charge_c(run.samples, kinds)
        live = [
            (qc / C_PER_MAH / run.area_cm2, s.deposit_um)
            for s, qc in zip(run.samples, qn, strict=True)
            if s.deposit_um is not None
        ]
        if live:
            ax.plot(
                [a for a, _ in live],
                [b for _, b in live],
                color="#17becf",
                lw=0.8,
                ls=":",
                label="live estimate during the run (creep not separable before the strip)",
            )
        box = ax.text(
            0.02,
            0.97,
            _wrap(
                (
                    f"{fit.um_per_mah_cm2:.2f} µm per mAh/cm² → apparent porosity {verdict.text()}"
                    if verdict.value is not None
                    else f"apparent porosity {verdict.text()}"
                ),
                88,
            )
            + f"\ncreep removed: {fit.creep_um(dep.points[-1].t_s):.1f} µm; residual {fit.rms_um:.2f} µm rms",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
            bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8},
        )
        below = 0.96 - 0.045 * (box.get_text().count("\n") + 1)  # under the text box, however many lines it has
        ax.legend(loc="upper left", bbox_to_anchor=(0.0, below), fontsize=8.5, framealpha=0.85)
        top = max(max(h), fit.deposit_um(q_max), NA_DENSE_UM_PER_MAH_CM2 * q_max)
        bottom = min(min(h), 0.0)
        ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.6 * (top - bottom))  # room for the text and legend
    ax.set_xlabel("net charge deposited / mAh cm$^{-2}$")
    ax.set_ylabel("deposit thickness / µm")
    ax.set_title(f"Operando deposit thickness at {run.electro_pressure_kpa:g} kPa: {run.plan.name}")
    return fig


# ----------------------------------------------------------------------------------------------- summary


def _fmt_pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f} %"


def markdown_summary(run: RunData, assessed: DepositAssessment, figures: dict[str, str]) -> str:
    """The report's text."""
    s = run.summary
    dep, unc, verdict = assessed.deposit, assessed.uncertainty, assessed.verdict
    times, _ = monotonic_test_time([x.test_time_s for x in run.samples])
    lines = [
        f"# Run report: {run.plan.name}",
        "",
        f"- run folder: `{run.run_dir.name}`"
        + (" (simulated: the simulator's model, not a measurement)" if run.simulated else ""),
        f"- cell: {run.plan.electrolyte}, working electrode {run.area_cm2:.3f} cm²",
        f"- plating/stripping pressure: {run.electro_pressure_kpa:g} kPa",
        f"- outcome: **{s.get('state', run.state)}** {s.get('reason', '')}".rstrip(),
        f"- ICE: **{_fmt_pct(s.get('ice'))}**, average CE: {_fmt_pct(s.get('average_ce'))}",
        f"- samples: {len(run.samples)}" + (f", from t = {times[0]:.0f} s to t = {times[-1]:.0f} s" if times else ""),
        "- times: test time from the start of the run (the experiment clock starts at 0 when the run starts, a "
        "resumed run continues it; the figures and the BDF export use the same)",
        "",
        "## Coulombic efficiency",
        "",
        "| cycle | plated / mAh cm⁻² | stripped / mAh cm⁻² | CE / % |",
        "|---:|---:|---:|---:|",
    ]
    for c, pl, st, ce in cycle_table(run):
        lines.append(f"| {c} | {pl:.4f} | {st:.4f} | {'—' if ce is None else f'{100 * ce:.2f}'} |")
    lines += ["", "## Deposit (operando, from the press)", ""]
    if dep is None:
        lines.append(f"- apparent porosity: **{verdict.text()}**")
    elif verdict.value is None:  # nothing of the fit is a measurement: its numbers only for diagnosis
        f = dep.fit
        spread = f" ± {unc.sigma_um_per_mah_cm2:.2f}" if unc is not None else ""
        lines += [
            f"- apparent porosity: **{verdict.text()}**",
            f"- the fit, for diagnosis only (not a measurement): {f.um_per_mah_cm2:.2f}{spread} µm per mAh/cm² "
            f"(dense Na: {NA_DENSE_UM_PER_MAH_CM2}), creep {f.creep_um(dep.points[-1].t_s):.2f} µm, residual "
            f"{f.rms_um:.2f} µm rms over {len(dep.points)} readings",
        ]
    else:
        f = dep.fit
        q_peak = max(p.q_mah_cm2 for p in dep.points)
        lines += [
            f"- thickness per charge: {f.um_per_mah_cm2:.2f} µm per mAh/cm² (dense Na: {NA_DENSE_UM_PER_MAH_CM2})",
            f"- apparent porosity: **{verdict.text()}**",
            f"- deposit at the peak charge ({q_peak:.3f} mAh/cm²): {f.deposit_um(q_peak):.2f} µm"
            + (f" ± {unc.sigma_um_per_mah_cm2 * q_peak:.2f} µm (1σ)" if unc is not None else ""),
            f"- creep removed by the fit: {f.creep_um(dep.points[-1].t_s):.2f} µm; residual {f.rms_um:.2f} µm rms",
        ]
        if unc is not None:
            lines.append(
                f"- uncertainty: ±{unc.sigma_um_per_mah_cm2:.2f} µm per mAh/cm² (1σ) from a load-cell drift of "
                f"{unc.drift_n_per_sqrt_s:g} N/√s (rig configuration) through the stack's "
                f"{unc.stiffness_n_per_um:.3f} N/µm; {unc.draws} refits of the model with random drift"
            )
    if verdict.cause in ("drift", "too short", "impossible"):
        lines.append(
            "- a stiffer load path (no soft disc spring) or a load cell with less drift narrows the interval in "
            "proportion, a larger charge as its square root"
        )
    lines += ["", "## Alarms", ""]
    alarms = [e for e in run.events if e["kind"] == "alarm"]
    lines += [f"- t = {e['test_time_s']:.0f} s: {e['message']}" for e in alarms] or ["None."]
    lines += ["", "## Pauses, suspensions and resumes", ""]
    stops = [
        e
        for e in run.events
        if (e["kind"] == "state" and any(w in e["message"] for w in ("paused", "suspended", "-> running: operator")))
        or e["kind"] in ("resume", "suspend", "crash_resume", "resumed")
    ]
    stops = [e for e in stops if "idle -> running" not in e["message"]]
    lines += [f"- t = {e['test_time_s']:.0f} s ({e['kind']}): {e['message']}" for e in stops] or ["None."]
    lines += ["", "## Figures", ""]
    for title, name in figures.items():
        lines += [f"### {title}", "", f"![{title}]({name})", ""]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ReportResult:
    """What was written."""

    markdown: Path
    figures: list[Path]


def report_run(run_dir: Path, *, out: Path | None = None) -> ReportResult:
    """Write the run's figures and summary into `out` (default RUN_DIR/report)."""
    plt = _plt()
    run = load_run(run_dir)
    if not run.samples:
        raise ReportError(f"{run_dir}: the run has no samples")
    out = out or run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    assessed = assess(run)
    dep, unc = assessed.deposit, assessed.uncertainty
    made = {
        "Pressure": ("pressure.png", figure_pressure(run)),
        "Voltage against capacity": ("voltage_capacity.png", figure_voltage_capacity(run)),
        "Coulombic efficiency per cycle": ("ce.png", figure_ce(run)),
        "Deposit thickness against charge": (
            "thickness.png",
            figure_thickness(run, dep, unc, verdict=assessed.verdict),
        ),
    }
    paths = []
    for name, fig in made.values():
        fig.savefig(out / name)
        plt.close(fig)
        paths.append(out / name)
    md = out / "report.md"
    md.write_text(markdown_summary(run, assessed, {t: n for t, (n, _) in made.items()}), encoding="utf-8")
    return ReportResult(md, paths)


# ---------------------------------------------------------------------------------------------- campaign


@dataclass
class CampaignPoint:
    """One run of a campaign."""

    run_dir: Path
    name: str
    electrolyte: str
    pressure_kpa: float
    ice: float | None
    porosity: float | None  # only a value that may be printed (rig.data.analysis.PorosityVerdict)
    state: str
    simulated: bool
    condition: str = ""  # the first plate: "0.5 mA/cm², 1 mAh/cm²"
    porosity_text: str = "—"  # with its interval, or marked as not resolved


def plate_condition(plan: Plan) -> str:
    """The first plate's current density and capacity (or duration), as the campaign figure states them."""
    plate = next((s for s in plan.steps if isinstance(s, PlannedPlate)), None)
    if plate is None:
        return "no plate"
    area_cm2 = plan.electrode_area_m2 * 1e4
    density = f"{-plate.current_a * 1e3 / area_cm2:.3g} mA/cm²"
    if plate.capacity_c is not None:
        return f"{density}, {plate.capacity_c / 3.6 / area_cm2:.3g} mAh/cm²"
    return f"{density}, {plate.duration_s or 0:.0f} s"


def find_runs(dirs: Sequence[Path]) -> list[Path]:
    """Every run folder (holding run.sqlite) in or under the given folders."""
    found: list[Path] = []
    for d in dirs:
        if (d / "run.sqlite").exists():
            found.append(d)
        else:
            found.extend(sorted(p.parent for p in d.rglob("run.sqlite")))
    return sorted(set(found))


def campaign_points(dirs: Sequence[Path]) -> list[CampaignPoint]:
    """ICE (and the deposit's apparent porosity) of every run found."""
    pts = []
    for rd in find_runs(dirs):
        try:
            run = load_run(rd)
        except ReportError:
            continue
        verdict = assess(run).verdict
        pts.append(
            CampaignPoint(
                rd,
                run.plan.name,
                run.electrolyte,
                run.electro_pressure_kpa,
                run.summary.get("ice"),
                verdict.value if verdict.resolved else None,
                run.state,
                run.simulated,
                plate_condition(run.plan),
                verdict.text(),
            )
        )
    return pts


def figure_campaign(points: Sequence[CampaignPoint]) -> Figure:
    """ICE against pressure, one panel per electrolyte (the paper's Fig. 1a/b)."""
    plt = _plt()
    electrolytes = sorted({p.electrolyte for p in points}) or ["dme"]
    fig, axes = plt.subplots(1, len(electrolytes), figsize=(5.6 * len(electrolytes), 4.6), squeeze=False)
    for n, (ax, el) in enumerate(zip(axes[0], electrolytes, strict=True)):
        rows = sorted((p for p in points if p.electrolyte == el and p.ice is not None), key=lambda p: p.pressure_kpa)
        sim = any(p.simulated for p in rows)
        label = "simulated (the simulator's model)" if sim else "measured"
        ax.plot(
            [p.pressure_kpa for p in rows],
            [100 * (p.ice or 0) for p in rows],
            "o-",
            color="#1f77b4" if el == "dme" else "#d62728",
            ms=7,
            label=label,
        )
        opt = PAPER_OPTIMA.get(el)
        if opt:
            ax.plot(
                [opt[0]],
                [100 * opt[1]],
                "*",
                color="gold",
                mec="k",
                ms=16,
                label=f"paper: {100 * opt[1]:.1f} % at {opt[0]:g} kPa",
            )
        ax.set_xscale("log")
        ax.set_xticks([10, 20, 50, 100, 180, 250])
        ax.set_xticklabels(["10", "20", "50", "100", "180", "250"])
        ax.set_xlabel("stack pressure / kPa")
        ax.set_ylabel("initial coulombic efficiency / %")
        ax.set_title(f"({'abcdefgh'[n]}) {ELECTROLYTE_NAMES.get(el, el)}")
        ys = [100 * (p.ice or 0) for p in rows] + ([100 * opt[1]] if opt else [])
        if ys:
            ax.set_ylim(max(0, min(ys) - 8), min(100, max(ys) + 6))
        ax.legend(loc="lower right", fontsize=9)
    conditions = sorted({p.condition for p in points})
    cond = conditions[0] if len(conditions) == 1 else "plating conditions differ between runs: see the table"
    fig.suptitle(f"ICE against stack pressure (Na on Al, {cond})", fontsize=12)
    return fig


def report_campaign(dirs: Sequence[Path], *, out: Path | None = None) -> ReportResult:
    """Write the campaign figure and summary into `out` (default: the first folder's report/)."""
    plt = _plt()
    points = campaign_points(dirs)
    if not points:
        raise ReportError(f"no runs found in {', '.join(str(d) for d in dirs)}")
    out = out or dirs[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    fig = figure_campaign(points)
    fig_path = out / "ice_vs_pressure.png"
    fig.savefig(fig_path)
    plt.close(fig)
    sim = any(p.simulated for p in points)
    lines = [
        "# Campaign report: ICE against pressure",
        "",
        "Simulated values are the simulator's model (only the optima are the paper's numbers)." if sim else "",
        "",
        "| electrolyte | pressure / kPa | plate | ICE / % | paper / % | apparent porosity | state | run |",
        "|---|---:|---|---:|---:|---:|---|---|",
    ]
    for p in sorted(points, key=lambda p: (p.electrolyte, p.pressure_kpa)):
        opt = PAPER_OPTIMA.get(p.electrolyte)
        paper = f"{100 * opt[1]:.1f}" if opt and abs(opt[0] - p.pressure_kpa) < 1e-6 else ""
        ice = "—" if p.ice is None else f"{100 * p.ice:.2f}"
        por = p.porosity_text
        lines.append(
            f"| {p.electrolyte} | {p.pressure_kpa:g} | {p.condition} | {ice} | {paper} | {por} | {p.state} "
            f"| `{p.run_dir.name}` |"
        )
    lines += ["", "![ICE against pressure](ice_vs_pressure.png)", ""]
    md = out / "report.md"
    md.write_text("\n".join(lines), encoding="utf-8")
    return ReportResult(md, [fig_path])
