"""One runs folder per user (issue 14, item 12): `--runs`, else the configuration's `runs_dir`, else the user data
folder (platformdirs: `$XDG_DATA_HOME/rig/runs` on Linux); never `./runs` of wherever the operator stood."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from rig.config import ConfigError, load_config
from tests.support.rig_cli import rig_env, run_rig

EXAMPLE = Path(__file__).parents[2] / "docs" / "rig.example.toml"
SHORT = Path(__file__).parents[1] / "engine" / "short_protocol.yaml"
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="XDG_DATA_HOME is the user data folder on Linux")


def _config(tmp: Path, runs_dir: str) -> Path:
    text = EXAMPLE.read_text()
    commented = '# runs_dir = "/var/lib/rig/runs"'
    assert commented in text  # the example documents the key
    path = tmp / "rig.toml"
    path.write_text(text.replace(commented, f"runs_dir = {json.dumps(runs_dir)}"))
    return path


def test_rig_env_gives_each_test_its_own_user_data_folder(tmp_path: Path) -> None:
    env = rig_env(tmp_path)
    assert Path(env["XDG_DATA_HOME"]).is_relative_to(tmp_path)


@linux_only
def test_runs_root_is_the_option_then_the_configuration_then_the_user_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rig.data.paths import resolve_runs_root

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert resolve_runs_root(None, None) == tmp_path / "data" / "rig" / "runs"
    cfg = load_config(_config(tmp_path, str(tmp_path / "from-config")))
    assert resolve_runs_root(None, cfg) == tmp_path / "from-config"
    assert resolve_runs_root(tmp_path / "given", cfg) == tmp_path / "given"
    home = load_config(_config(tmp_path, "~/rig-runs"))
    assert resolve_runs_root(None, home) == Path.home() / "rig-runs"


def test_a_relative_runs_dir_in_the_configuration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"rig\.runs_dir"):
        load_config(_config(tmp_path, "runs"))


@linux_only
def test_campaign_writes_into_the_user_runs_folder_not_the_working_directory(tmp_path: Path) -> None:
    env = rig_env(tmp_path, COLUMNS="200")
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    out = run_rig("campaign", str(SHORT), "--sim", "--speed", "1000", env=env, cwd=cwd, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert list(cwd.iterdir()) == []  # nothing left where the operator stood
    root = Path(env["XDG_DATA_HOME"]) / "rig" / "runs"
    (campaign,) = root.glob("campaign-*")
    (run_dir,) = campaign.glob("*/*/run.sqlite")
    listed = json.loads(run_rig("runs", "--json", env=env).stdout)
    assert [r["folder"] for r in listed] == [str(run_dir.parent)]
    assert listed[0]["state"] == "completed"
