"""`rig validate FILE [--config CFG]`: exit 0 with the plan, or exit 2 with FILE:LINE:COL errors. No hardware."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from protocols import ProtocolError
from protocols.validate import RigLimits, validate_protocol
from protocols.yaml_loader import MAX_BYTES
from rig.cli.app import app
from rig.cli.validate_cmd import default_limits, read_protocol_file, recorded_run_limits
from tests.support.rig_cli import RIG, rig_env, run_rig

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
    limits = f"10–200 kPa, ≤ 1.05 A, ≤ 10 mA/cm², compliance 3 V, electrode 1.131 cm² ({cfg})"
    assert limits in " ".join(ok.stdout.split())
    path = LIBRARY / "ecdmc_250kpa_plate_strip.yaml"
    bad = runner.invoke(app, ["validate", str(path), "--config", str(cfg)])
    assert bad.exit_code == 2
    assert f"{path}:18:24: `target`: 250 kPa is outside the rig's pressure range 10–200 kPa" in bad.stderr


def test_a_rig_with_another_electrode_refuses_the_cell(tmp_path: Path) -> None:
    cfg = config(tmp_path, **{"electrode_diameter_mm = 12.0": "electrode_diameter_mm = 16.0"})
    path = LIBRARY / "dme_180kpa_plate_strip.yaml"
    result = runner.invoke(app, ["validate", str(path), "-c", str(cfg)])
    assert result.exit_code == 2
    assert f"{path}:16:13: `diameter`: the cell's electrode (1.131 cm²) is not the rig's (2.011 cm²)" in result.stderr


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
        [sys.executable, "-c", "from rig.cli.app import app; app()", "validate", str(path)],
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


# --- issue 14, item 8: the current density's plausibility limit, and a file's size before it is read ----------

IMPLAUSIBLE = BROKEN / "current_density_implausible.yaml"
DENSITY_LINE = "max_current_density_ma_cm2 = 10.0"  # as docs/rig.example.toml writes it


def test_a_current_1000_times_too_large_is_refused_saying_how_to_raise_the_limit(tmp_path: Path) -> None:
    result = run_rig("validate", str(IMPLAUSIBLE), env=rig_env(tmp_path))
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith(f"{IMPLAUSIBLE}:")]
    assert line.startswith(
        f"{IMPLAUSIBLE}:9:30: `current_density`: 500 mA/cm² is more than the plausibility limit of 10 mA/cm²"
    )
    assert "`max_current_density_ma_cm2`" in line and "RIG_RIG__MAX_CURRENT_DENSITY_MA_CM2" in line


def test_the_configuration_or_its_environment_override_raises_the_limit(tmp_path: Path) -> None:
    raised = config(tmp_path, **{DENSITY_LINE: "max_current_density_ma_cm2 = 600.0"})
    result = run_rig("validate", str(IMPLAUSIBLE), "--config", str(raised), env=rig_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "≤ 600 mA/cm²" in " ".join(result.stdout.split())
    plain = config(tmp_path)
    env = rig_env(tmp_path, RIG_RIG__MAX_CURRENT_DENSITY_MA_CM2="600")
    for args in (["--config", str(plain)], []):  # with a configuration, and with the defaults (as `rig run --sim`)
        result = run_rig("validate", str(IMPLAUSIBLE), *args, env=env)
        assert result.returncode == 0, (args, result.stderr)
    low = rig_env(tmp_path, RIG_RIG__MAX_CURRENT_DENSITY_MA_CM2="0.4")
    result = run_rig("validate", str(LIBRARY / "dme_180kpa_plate_strip.yaml"), env=low)
    assert result.returncode == 2 and "more than the plausibility limit of 0.4 mA/cm²" in result.stderr


@pytest.mark.parametrize(("toml", "env"), [("0", "0"), ("-5", "-5"), ("nan", "nan"), ('"lots"', "lots")])
def test_a_limit_that_is_not_a_positive_number_is_a_configuration_error(tmp_path: Path, toml: str, env: str) -> None:
    path = LIBRARY / "dme_180kpa_plate_strip.yaml"
    bad = config(tmp_path, **{DENSITY_LINE: f"max_current_density_ma_cm2 = {toml}"})
    result = run_rig("validate", str(path), "--config", str(bad), env=rig_env(tmp_path))
    assert result.returncode == 2 and "rig.max_current_density_ma_cm2" in result.stderr, result.stderr
    result = run_rig("validate", str(path), env=rig_env(tmp_path, RIG_RIG__MAX_CURRENT_DENSITY_MA_CM2=env))
    assert result.returncode == 2 and "RIG_RIG__MAX_CURRENT_DENSITY_MA_CM2" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_50_mb_stream_is_refused_after_reading_no_more_than_the_cap(tmp_path: Path) -> None:
    """A pipe cannot be measured before reading: at most 1 MB and a byte are read, then the reader lets go."""
    fifo = tmp_path / "big.yaml"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [*RIG, "validate", str(fifo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=rig_env(tmp_path)
    )
    try:
        fd = _open_writer(fifo, proc)
        chunk, written = b"# " + b"x" * 65_533 + b"\n", 0
        try:
            while written < 50 * 2**20:
                written += os.write(fd, chunk)
        except BrokenPipeError:
            pass
        finally:
            os.close(fd)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 2, stderr
    assert stderr.startswith(f"{fifo}:1:1: the file is too large (more than {MAX_BYTES} bytes"), stderr
    assert written < MAX_BYTES + 2**20, f"the reader took {written} bytes"


def _open_writer(fifo: Path, proc: subprocess.Popen[str]) -> int:
    """The pipe's write end, once the reader has opened it (without blocking if it never does)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
            continue
        os.set_blocking(fd, True)
        return fd


def test_a_50_mb_file_is_refused_by_its_size(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(50 * 2**20)  # sparse: nothing to read but its size
    result = run_rig("validate", str(big), env=rig_env(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith(
        f"{big}:1:1: the file is too large ({50 * 2**20} bytes; a protocol is at most {MAX_BYTES} bytes)"
    ), result.stderr


def test_the_reader_reads_no_more_than_the_cap_of_a_large_file(tmp_path: Path) -> None:
    io_stats = Path("/proc/self/io")
    if not io_stats.exists():
        pytest.skip("needs Linux's /proc/self/io to count the bytes read")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * (50 * 2**20) + b"\n")

    def bytes_read() -> int:
        return int(next(x for x in io_stats.read_text().splitlines() if x.startswith("rchar:")).split()[1])

    before = bytes_read()
    with pytest.raises(ProtocolError) as info:
        read_protocol_file(big)
    taken = bytes_read() - before
    assert str(info.value).startswith(f"{big}:1:1: the file is too large")
    assert taken < 64 * 1024, f"{taken} bytes read"


@pytest.mark.parametrize(
    ("raw", "where", "shown"),
    [
        (b"name: x\ncell:\n  id: \xff\xfe\n", "3:7", "0xFF"),
        (b"name: caf\xc3\n", "1:10", "0xC3"),
        (b"a: 1\r\nb: \x80\r\n", "2:4", "0x80"),
    ],
)
def test_a_file_that_is_not_utf8_is_refused_where_the_bad_byte_is(
    tmp_path: Path, raw: bytes, where: str, shown: str
) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(raw)
    with pytest.raises(ProtocolError) as info:
        read_protocol_file(path)
    assert str(info.value) == f"{path}:{where}: the file is not UTF-8 text (byte {shown}): save it as UTF-8"
    result = run_rig("validate", str(path), env=rig_env(tmp_path))
    assert result.returncode == 2 and result.stderr.startswith(f"{path}:{where}: the file is not UTF-8"), result.stderr


def test_the_reader_keeps_a_good_file_exactly(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    text = (LIBRARY / "dme_180kpa_plate_strip.yaml").read_text(encoding="utf-8")
    path.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    assert read_protocol_file(path) == text.replace("\n", "\r\n")
    with pytest.raises(ProtocolError, match=r":1:1: cannot read the protocol: "):
        read_protocol_file(tmp_path)


def test_a_recorded_run_is_read_back_whatever_current_density_it_was_allowed(tmp_path: Path) -> None:
    """A run made under a raised limit (its configuration's) must still report: reading back does not re-judge it."""
    text = (BROKEN / "current_density_implausible.yaml").read_text(encoding="utf-8")
    with pytest.raises(ProtocolError):
        validate_protocol(text, "run/protocol.yaml", default_limits())
    plan = validate_protocol(text, "run/protocol.yaml", recorded_run_limits())
    assert plan.steps[1].kind == "plate"
    env = rig_env(tmp_path, RIG_RIG__MAX_CURRENT_DENSITY_MA_CM2="lots")  # not read: it never raises
    assert (
        subprocess.run(
            [*RIG[:2], "from rig.cli.validate_cmd import recorded_run_limits as r; r()"], env=env, timeout=60
        ).returncode
        == 0
    )
