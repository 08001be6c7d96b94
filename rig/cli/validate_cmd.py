"""`rig validate FILE [--config CFG]`: check a protocol against the rig's limits and print the plan. No hardware.

Exit 0 with the plan summary, or exit 2 with every error as `FILE:LINE:COL: message` (on stderr). Without
`--config` the limits are those of a rig configuration that says nothing: 10–250 kPa (`RigSection` defaults),
1.05 A (the Keithley 2450's largest range), 10 mA/cm² (`rig.max_current_density_ma_cm2`; its environment override
`RIG_RIG__MAX_CURRENT_DENSITY_MA_CM2` applies here too, so `rig run --sim` can be given a higher one), 3 V
compliance (`PotentiostatConfig.voltage_limit_v` default), and any electrode size. With `--config` they come from
the file, including the electrode area the cell must match.

`read_protocol_file` is the one way a protocol file is read (`rig validate`, `rig run`): its size is checked before
it is read, and no more than the 1 MB cap and a byte is ever read, so a 50 MB file or an endless stream is refused
without being read whole.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from pydantic import ValidationError
from rich import box
from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from protocols.errors import ProtocolError, ProtocolIssue, SourceMark
from protocols.lines import LineIndex
from protocols.plan import Plan
from protocols.summary import step_rows, totals
from protocols.validate import KEITHLEY_2450_MAX_CURRENT_A, RigLimits, validate_protocol
from protocols.yaml_loader import MAX_BYTES, too_large
from rig.config import ConfigError, PotentiostatConfig, RigConfig, RigEnvironment, RigSection, load_config

__all__ = [
    "DENSITY_ENV",
    "EXIT_INVALID",
    "default_limits",
    "limits_from_config",
    "read_protocol_file",
    "recorded_run_limits",
    "render_plan",
    "run_validate",
]

EXIT_INVALID = 2
_TABLE_HEAD = 100
_TABLE_TAIL = 20


#: The environment override of `[rig] max_current_density_ma_cm2` (pydantic-settings' name for it).
DENSITY_ENV = "RIG_RIG__MAX_CURRENT_DENSITY_MA_CM2"


def _density_from_environment() -> float | None:
    """`RIG_RIG__MAX_CURRENT_DENSITY_MA_CM2` in mA/cm² (as pydantic-settings reads it for a configuration), or None."""
    try:
        return RigEnvironment().max_current_density_ma_cm2
    except ValidationError as exc:
        got = exc.errors()[0].get("input")
        why = "the current-density limit must be a number of mA/cm² above 0"
        raise ConfigError(f"{DENSITY_ENV}={got!r}: {why}") from None


def default_limits() -> RigLimits:
    """Limits of a rig configuration that says nothing (its defaults; the current-density limit's override applies).

    Raises `ConfigError` if `RIG_RIG__MAX_CURRENT_DENSITY_MA_CM2` is set to anything but a positive number.
    """
    density_ma_cm2 = _density_from_environment()
    if density_ma_cm2 is None:
        density_ma_cm2 = RigSection.model_fields["max_current_density_ma_cm2"].default
    return RigLimits(
        min_pressure_pa=RigSection.model_fields["min_pressure_kpa"].default * 1e3,
        max_pressure_pa=RigSection.model_fields["max_pressure_kpa"].default * 1e3,
        max_current_a=KEITHLEY_2450_MAX_CURRENT_A,
        max_current_density_a_m2=density_ma_cm2 * 10.0,
        voltage_compliance_v=PotentiostatConfig.model_fields["voltage_limit_v"].default,
    )


def recorded_run_limits() -> RigLimits:
    """Limits for reading back a run that already happened (`rig report`, `rig show`): the run was checked against
    its own rig when it started, so the rig-specific judgements (its pressure range, the current-density
    plausibility limit its configuration may have raised) are lifted. Never raises."""
    return RigLimits(
        min_pressure_pa=0.0,
        max_pressure_pa=math.inf,
        max_current_a=KEITHLEY_2450_MAX_CURRENT_A,
        max_current_density_a_m2=math.inf,
        voltage_compliance_v=PotentiostatConfig.model_fields["voltage_limit_v"].default,
    )


def limits_from_config(cfg: RigConfig) -> RigLimits:
    """The rig's limits as plain values for `protocols`."""
    return RigLimits(
        min_pressure_pa=cfg.rig.min_pressure_kpa * 1e3,
        max_pressure_pa=cfg.rig.max_pressure_kpa * 1e3,
        max_current_a=KEITHLEY_2450_MAX_CURRENT_A,
        max_current_density_a_m2=cfg.rig.max_current_density_ma_cm2 * 10.0,  # mA/cm² → A/m²
        voltage_compliance_v=cfg.potentiostat.voltage_limit_v,
        electrode_area_m2=cfg.rig.area_m2,
    )


def read_protocol_file(path: Path) -> str:
    """The text of a protocol file, read only if it is no larger than the protocol size cap (1 MB).

    The size is taken from the open file before reading; a stream whose size cannot be known (a pipe, a device) is
    read to one byte past the cap at most. Raises `ProtocolError`: `FILE:1:1` for a file that cannot be read or is
    too large, and the line and column of the first byte that is not UTF-8.
    """
    name = str(path)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BYTES:
                raise too_large(name, f"{size} bytes")
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ProtocolError([ProtocolIssue(SourceMark(name, 1, 1), f"cannot read the protocol: {reason}")]) from None
    if len(raw) > MAX_BYTES:
        raise too_large(name, f"more than {MAX_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start].decode("utf-8")
        line, col = LineIndex(before).position(len(before))
        message = f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02X}): save it as UTF-8"
        raise ProtocolError([ProtocolIssue(SourceMark(name, line, col), message)]) from None


def render_plan(plan: Plan, console: Console, *, limits_from: str) -> None:
    """Print the plan summary: the expanded steps, the totals and the assumptions."""
    console.print(Text(plan.name, style="bold"), Text(f" ({plan.source_file})"), soft_wrap=True)
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
    console.print(Text(f"  limits: {limits_from}"), soft_wrap=True)  # a path is never broken in two
    console.print("[green]valid[/green]")


def _describe_limits(limits: RigLimits, source: str) -> str:
    area = f", electrode {limits.electrode_area_m2 * 1e4:.4g} cm²" if limits.electrode_area_m2 else ""
    return (
        f"{limits.min_pressure_pa / 1e3:g}–{limits.max_pressure_pa / 1e3:g} kPa, ≤ {limits.max_current_a:g} A, "
        f"≤ {limits.max_current_density_a_m2 / 10:g} mA/cm², compliance {limits.voltage_compliance_v:g} V{area} "
        f"({source})"
    )


def run_validate(file: Path, config: Path | None, out: Console, err: Console) -> int:
    """Validate `file` (against `config` if given); print the summary or the errors; return the exit code."""
    try:
        if config is not None:
            limits = limits_from_config(load_config(config))
            source = str(config)
        else:
            limits = default_limits()
            source = "defaults; give --config for the rig's own"
    except ConfigError as exc:
        err.print(str(exc), markup=False, highlight=False, soft_wrap=True)
        return EXIT_INVALID
    try:
        plan = validate_protocol(read_protocol_file(file), str(file), limits)
    except ProtocolError as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False, highlight=False, soft_wrap=True)
        err.print(f"{len(exc.issues)} error{'s' if len(exc.issues) != 1 else ''}: not valid", highlight=False)
        return EXIT_INVALID
    render_plan(plan, out, limits_from=_describe_limits(limits, source))
    return 0
