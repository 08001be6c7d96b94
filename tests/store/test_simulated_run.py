"""A run is labelled simulated (report, export sidecar) however its simulator was started."""

from __future__ import annotations

import json
from pathlib import Path

from rig.data.store import is_simulated_run

REAL = {"speed": "1.0", "rig_config": json.dumps({"rig": {"name": "bench-2"}})}


def test_real_hardware_is_not_simulated(tmp_path: Path) -> None:
    assert not is_simulated_run(tmp_path, REAL)
    assert not is_simulated_run(tmp_path, {})  # an old run without metadata: no evidence either way
    assert not is_simulated_run(tmp_path, {"speed": "garbage"})


def test_rig_run_sim_leaves_the_simulator_files(tmp_path: Path) -> None:
    (tmp_path / "sim-rig.toml").write_text("")
    assert is_simulated_run(tmp_path, REAL)


def test_a_simulator_started_by_hand_is_known_by_its_clock_or_its_config(tmp_path: Path) -> None:
    # `rig run --config sim-rig.toml` on `python -m hardware_sim --speed 500`: the campaign figure called it measured
    assert is_simulated_run(tmp_path, {**REAL, "speed": "500.0"})
    assert is_simulated_run(tmp_path, {**REAL, "rig_config": json.dumps({"rig": {"name": "sim"}})})
