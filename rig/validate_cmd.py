"""`rig validate FILE [--config CFG]`: check a protocol against the rig's limits and print the plan. No hardware.

Exit 0 with the plan summary, or exit 2 with every error as `FILE:LINE:COL: message` (on stderr). Without
`--config` the limits are those of a rig configuration that says nothing: 10–250 kPa (`RigSection` defaults),
1.05 A (the Keithley 2450's largest range), 3 V compliance (`PotentiostatConfig.voltage_limit_v` default), and
any electrode size. With `--config` they come from the file, including the electrode area the cell must match.
"""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from protocols.errors import ProtocolError
from protocols.plan import Plan
from protocols.summary import step_rows, totals
from protocols.validate import KEITHLEY_2450_MAX_CURRENT_A, RigLimits, validate_protocol
from rig.config import ConfigError, PotentiostatConfig, RigConfig, RigSection, load_config

__all__ = ["EXIT_INVALID", "default_limits", "limits_from_config", "render_plan", "run_validate"]

EXIT_INVALID = 2
_TABLE_HEAD = 100
_TABLE_TAIL = 20


def default_limits() -> RigLimits:
    """Limits of a rig configuration that says nothing (the configuration's own defaults)."""
    return RigLimits(
        min_pressure_pa=RigSection.model_fields["min_pressure_kpa"].default * 1e3,
        max_pressure_pa=RigSection.model_fields["max_pressure_kpa"].default * 1e3,
        max_current_a=KEITHLEY_2450_MAX_CURRENT_A,
        voltage_compliance_v=PotentiostatConfig.model_fields["voltage_limit_v"].default,
    )


def limits_from_config(cfg: RigConfig) -> RigLimits:
    """The rig's limits as plain values for `protocols`."""
    return RigLimits(
        min_pressure_pa=cfg.rig.min_pressure_kpa * 1e3,
        max_pressure_pa=cfg.rig.max_pressure_kpa * 1e3,
        max_current_a=KEITHLEY_2450_MAX_CURRENT_A,
        voltage_compliance_v=cfg.potentiostat.voltage_limit_v,
        electrode_area_m2=cfg.rig.area_m2,
    )


def render_plan(plan: Plan, console: Console, *, limits_from: str) -> None:
    """Print the plan summary: the expanded steps, the totals and the assumptions."""
    console.print(Text(plan.name, style="bold"), Text(f" ({plan.source_file})"))
    if plan.description:
        console.print(Text(plan.description.strip()))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("#", "right"),
        ("cycle", "right"),
        ("step", "left"),
        ("kPa", "right"),
        ("est. time", "right"),
        ("resume", "left"),
        ("line", "right"),
    )
    for column, justify in columns:
        table.add_column(column, justify=justify, no_wrap=True)
    table.add_column("what", ratio=1)
    rows = step_rows(plan)
    shown = rows if len(rows) <= _TABLE_HEAD + _TABLE_TAIL else rows[:_TABLE_HEAD] + rows[-_TABLE_TAIL:]
    for i, row in enumerate(shown):
        if len(shown) < len(rows) and i == _TABLE_HEAD:
            table.add_row("…", "", "", "", "", "", "", f"{len(rows) - len(shown)} more steps")
        cells = (row.number, row.cycle, row.kind, row.pressure, row.duration, row.on_resume, row.source, row.what)
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)
    for label, value in totals(plan):
        console.print(Text(f"  {label:<28} {value}"))
    for note in plan.notes:
        console.print(Text(f"  note: {note}"))
    console.print(Text(f"  limits: {limits_from}"))
    console.print("[green]valid[/green]")


def _describe_limits(limits: RigLimits, source: str) -> str:
    area = f", electrode {limits.electrode_area_m2 * 1e4:.4g} cm²" if limits.electrode_area_m2 else ""
    return (
        f"{limits.min_pressure_pa / 1e3:g}–{limits.max_pressure_pa / 1e3:g} kPa, ≤ {limits.max_current_a:g} A, "
        f"compliance {limits.voltage_compliance_v:g} V{area} ({source})"
    )


def run_validate(file: Path, config: Path | None, out: Console, err: Console) -> int:
    """Validate `file` (against `config` if given); print the summary or the errors; return the exit code."""
    if config is not None:
        try:
            limits = limits_from_config(load_config(config))
        except ConfigError as exc:
            err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
            return EXIT_INVALID
        source = str(config)
    else:
        limits = default_limits()
        source = "defaults; give --config for the rig's own"
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        err.print(f"{file}:1:1: cannot read the protocol: {reason}", markup=False, highlight=False, soft_wrap=True)
        return EXIT_INVALID
    try:
        plan = validate_protocol(text, str(file), limits)
    except ProtocolError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False, highlight=False, soft_wrap=True)
        err.print(f"{len(exc.issues)} error{'s' if len(exc.issues) != 1 else ''}: not valid", highlight=False)
        return EXIT_INVALID
    render_plan(plan, out, limits_from=_describe_limits(limits, source))
    return 0
