"""The rig configuration: the shipped example loads, the environment overrides, errors name the key and the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from rig.config import ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "rig.example.toml"


def test_the_shipped_example_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.rig.area_cm2 == pytest.approx(1.1310, abs=1e-4)
    assert cfg.buses["rs485"].port == "/dev/ttyUSB0"
    assert cfg.load_cell.bus == cfg.press.bus == "rs485"
    assert cfg.telemetry is not None and cfg.telemetry.username == "press-1"


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIG_BUSES__RS485__PORT", "/dev/ttyUSB7")
    monkeypatch.setenv("RIG_CLOCK__SPEED", "2")
    cfg = load_config(EXAMPLE)
    assert cfg.buses["rs485"].port == "/dev/ttyUSB7"
    assert cfg.clock.speed == 2.0


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (("baudrate = 115200", "baudrate = -5"), "buses.rs485.baudrate"),
        (("slave_id = 2", "slave_id = 2\nwarp = 9"), "press.warp"),
        (('bus = "rs485"\nslave_id = 2', 'bus = "nope"\nslave_id = 2'), "names no [buses.nope]"),
        (("electrode_diameter_mm = 12.0", "electrode_diameter_mm = 12.0\nelectrode_area_cm2 = 1.0"), "exactly one"),
        (("travel_max_um = 20000.0", "travel_max_um = -5.0"), "travel_min_um must be below"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, edit: tuple[str, str], key: str) -> None:
    text = EXAMPLE.read_text()
    assert edit[0] in text
    bad = tmp_path / "rig.toml"
    bad.write_text(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(bad) in str(info.value) and key in str(info.value)


def test_a_missing_or_broken_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[rig\nname = 1\n")
    with pytest.raises(ConfigError, match=r"broken\.toml: not valid TOML"):
        load_config(broken)
