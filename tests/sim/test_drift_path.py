"""The load cell's drift is a function of experiment time, not of how often anybody reads it."""

from __future__ import annotations

import pytest

from hardware_sim.clock import ManualClock
from hardware_sim.model import RigModel
from hardware_sim.params import LoadCellSensorParams, SimParams


def _model() -> tuple[RigModel, ManualClock]:
    clock = ManualClock()
    params = SimParams(loadcell_sensor=LoadCellSensorParams(noise_n=0.0, warmup_drift_n=0.0), seed=5)
    return RigModel(params, clock=clock), clock


def test_drift_path_does_not_depend_on_the_polling_rate() -> None:
    often, clock_a = _model()
    rarely, clock_b = _model()
    seen_often, seen_rarely = [], []
    for _ in range(60):  # 10 min: one model read every 0.5 s, the other every 10 s
        for _ in range(20):
            clock_a.advance(0.5)
            often.sensor_force_n()
        clock_b.advance(10.0)
        seen_often.append(often.sensor_force_n())
        seen_rarely.append(rarely.sensor_force_n())
    assert seen_often == pytest.approx(seen_rarely, abs=1e-12)
    assert max(abs(v) for v in seen_often) > 0.001  # it does drift
    assert often.sensor_force_n("gauge") != often.sensor_force_n("loadcell")  # one path per channel
