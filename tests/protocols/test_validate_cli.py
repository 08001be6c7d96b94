"""`rig validate FILE [--config CFG]`: exit 0 with the plan, or exit 2 with FILE:LINE:COL errors. No hardware."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from protocols.validate import RigLimits
from rig.cli import app
from rig.validate_cmd import default_limits

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "protocols" / "library"
BROKEN = Path(__file__).parent / "broken"
EXAMPLE_CONFIG = ROOT / "docs" / "rig.example.toml"
runner = CliRunner()


def config(tmp_path: Path, **replace: str) -> Path:
    """The example rig configuration with some lines replaced."""
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "rig.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_valid_protocol_prints_the_plan_and_exits_0() -> None:
    result = runner.invoke(app, ["validate", str(LIBRARY / "dme_180kpa_plate_strip.yaml")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "DME 180 kPa plate/strip" in out
    for step in ("pressure", "rest", "plate", "strip"):
        assert step in out
    assert re.search(r"estimated duration\s+4 h 0\d min", out)
    assert re.search(r"plated charge\s+1\.131 mAh \(1 mAh/cm²\)", out)
    assert re.search(r"Na thickness if dense\s+8\.86 µm", out)
    assert "total charge" in out and "85%" in out
    assert "10–250 kPa" in out and "valid" in out


def test_a_broken_protocol_prints_every_error_and_exits_2() -> None:
    path = BROKEN / "several_errors.yaml"
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith(str(path))]
    assert [tuple(map(int, line[len(str(path)) + 1 :].split(":")[:2])) for line in lines] == [
        (8, 24),
        (9, 22),
        (10, 65),
        (11, 30),
        (12, 46),
    ]
    assert "5 errors: not valid" in result.stderr
    assert result.stdout == ""


def test_the_configuration_sets_the_limits(tmp_path: Path) -> None:
    cfg = config(tmp_path, **{"max_pressure_kpa = 250.0": "max_pressure_kpa = 200.0"})
    ok = runner.invoke(app, ["validate", str(LIBRARY / "dme_180kpa_plate_strip.yaml"), "--config", str(cfg)])
    assert ok.exit_code == 0, ok.output
    assert f"10–200 kPa, ≤ 1.05 A, compliance 3 V, electrode 1.131 cm² ({cfg})" in " ".join(ok.stdout.split())
    path = LIBRARY / "ecdmc_250kpa_plate_strip.yaml"
    bad = runner.invoke(app, ["validate", str(path), "--config", str(cfg)])
    assert bad.exit_code == 2
    assert f"{path}:17:24: `target`: 250 kPa is outside the rig's pressure range 10–200 kPa" in bad.stderr


def test_a_rig_with_another_electrode_refuses_the_cell(tmp_path: Path) -> None:
    cfg = config(tmp_path, **{"electrode_diameter_mm = 12.0": "electrode_diameter_mm = 16.0"})
    path = LIBRARY / "dme_180kpa_plate_strip.yaml"
    result = runner.invoke(app, ["validate", str(path), "-c", str(cfg)])
    assert result.exit_code == 2
    assert f"{path}:15:13: `diameter`: the cell's electrode (1.131 cm²) is not the rig's (2.011 cm²)" in result.stderr


def test_a_bad_configuration_or_a_missing_file_exits_2(tmp_path: Path) -> None:
    cfg = config(tmp_path, **{"voltage_limit_v = 3.0": "voltage_limit_v = -3.0"})
    result = runner.invoke(app, ["validate", str(LIBRARY / "dme_180kpa_plate_strip.yaml"), "--config", str(cfg)])
    assert result.exit_code == 2
    assert "potentiostat.voltage_limit_v" in result.stderr
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["validate", str(missing)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"{missing}:1:1: cannot read the protocol")


def test_defaults_are_the_configurations_own() -> None:
    limits = default_limits()
    assert limits == RigLimits()
    assert (limits.min_pressure_pa, limits.max_pressure_pa, limits.voltage_compliance_v) == (10e3, 250e3, 3.0)


@pytest.mark.parametrize(("path", "code"), [(LIBRARY / "dme_180kpa_plate_strip.yaml", 0), (BROKEN / "nan.yaml", 2)])
def test_as_a_process(path: Path, code: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}
    proc = subprocess.run(
        [sys.executable, "-c", "from rig.cli import app; app()", "validate", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == code, proc.stdout + proc.stderr
    if code:
        assert f"{path}:8:41: `.nan`: NaN and infinity are not allowed" in proc.stderr
    else:
        assert "valid" in proc.stdout


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=0, max_size=3)), min_size=1, max_size=4),
)
def test_random_byte_edits_exit_0_or_2(tmp_path: Path, data: st.DataObject, edits: list[tuple[int, bytes]]) -> None:
    raw = bytearray(data.draw(st.sampled_from(sorted(LIBRARY.glob("*.yaml")))).read_bytes())
    for position, replacement in edits:
        i = position % (len(raw) + 1)
        raw[i : i + len(replacement)] = replacement
    path = tmp_path / "fuzzed.yaml"
    path.write_bytes(bytes(raw))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code in (0, 2)
    if result.exit_code == 2:
        assert result.stderr.startswith(f"{path}:")
