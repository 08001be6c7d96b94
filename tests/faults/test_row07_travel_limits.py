"""Fault matrix row 7: the press never goes past a travel limit; no contact within the allowed travel aborts.

Two property tests and one system test:
- the pure control law, over thousands of generated states (hypothesis): every target lies within the limits;
- the real Leadshine driver on the simulated drive over Modbus RTU, with random absolute and relative targets
  (in range, far out, non-finite): the simulated axis, the judge, never ends up beyond a limit;
- the controller's approach with no contact (tests/control): aborts and returns, counted here as travel beyond
  the allowed approach.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import DeviceError
from drivers.leadshine_pr import LeadshinePR
from drivers.modbus_bus import ModbusBus
from hardware_sim.rig import STEPPER_ID, SimulatedRig
from rig.control.controller import ApproachError, ControllerMode
from rig.control.law import LawSettings, PressureLaw
from tests.conftest import FaultFigure
from tests.control.harness import controlled_rig

UM = 0.625
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@st.composite
def law_cycles(draw: st.DrawFn) -> tuple[float, float, list[tuple[float, float, float, bool]]]:
    lower = draw(st.floats(-2000.0, 1000.0))
    upper = lower + draw(st.floats(1.0, 5000.0))
    steps = draw(
        st.lists(
            st.tuples(
                st.floats(-50.0, 200.0),  # force N (negative: a wrong tare)
                st.floats(-10.0, 200.0),  # reference N
                st.floats(0.0, 5.0),  # growth µm this cycle
                st.booleans(),  # feed-forward
            ),
            min_size=1,
            max_size=30,
        )
    )
    return lower, upper, steps


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=law_cycles(), start=st.floats(0.0, 1.0), k0=st.floats(5e-4, 0.4))
def test_the_law_never_targets_beyond_a_limit(
    case: tuple[float, float, list[tuple[float, float, float, bool]]], start: float, k0: float
) -> None:
    lower, upper, steps = case
    law = PressureLaw(LawSettings(k_initial_n_per_um=k0))
    pos = lower + start * (upper - lower)
    for i, (force, ref, growth, ff) in enumerate(steps):
        move = law.step(
            t_s=0.04 * i,
            force_n=force,
            reference_n=ref,
            position_um=pos,
            lower_um=lower,
            upper_um=upper,
            feed_forward=ff,
            growth_um=growth,
            max_step_um=100.0,
        )
        assert math.isfinite(move.target_um)
        assert lower - 1e-9 <= move.target_um <= upper + 1e-9, (lower, upper, move)
        pos = move.target_um


async def test_random_targets_on_the_simulated_drive_never_pass_a_limit(fault_figure: FaultFigure) -> None:
    lower_um, upper_um = -100.0, 400.0
    lo, hi = round(lower_um / UM), round(upper_um / UM)
    rng = random.Random(2026)
    sim = SimulatedRig(speed=50.0, line_timing=False)
    await sim.start()
    bus = ModbusBus(port=sim.lines["rs485"].url, baudrate=115200, timeout_s=0.2, retries=1, name="rs485")
    press = LeadshinePR(bus=bus, device_id=STEPPER_ID, name="press", um_per_pulse=UM)
    beyond = 0
    refused = accepted = 0
    cases = 150
    try:
        await press.connect()
        await press.verify_safe(lower_um, upper_um)
        await press.set_motion_limits(velocity_rpm=600, accel_ms_per_krpm=50, decel_ms_per_krpm=50)
        for _ in range(cases):
            kind = rng.random()
            try:
                if kind < 0.4:
                    await press.move_absolute_um(rng.uniform(-400.0, 700.0))
                elif kind < 0.8:
                    await press.move_relative_um(rng.uniform(-300.0, 300.0))
                else:
                    await press.move_absolute_um(rng.choice([math.nan, math.inf, -math.inf, 1e300, upper_um + 0.7]))
                accepted += 1
            except (ValueError, DeviceError):
                refused += 1
            while sim.model.axis.moving:  # the model's own axis: watch the whole move, not just its end
                sim.model.advance()
                c = sim.model.axis.counter_pulses
                beyond = max(beyond, c - hi, lo - c)
                await asyncio.sleep(0.002)
            c = sim.model.axis.counter_pulses
            beyond = max(beyond, c - hi, lo - c)
    finally:
        await press.close()
        await bus.close()
        await sim.close()
    fault_figure(
        7,
        f"pulses beyond limits ({cases} random moves)",
        f"{max(0, beyond)} ({accepted} moved, {refused} refused)",
        goal="0",
        met=beyond <= 0,
    )
    assert beyond <= 0
    assert accepted > 20 and refused > 20  # both kinds of case were exercised


async def test_no_contact_within_the_allowed_travel_aborts_and_returns(
    tmp_path: Path, fault_figure: FaultFigure
) -> None:
    allowed_um = 100.0
    async with controlled_rig(tmp_path, scale=1.0, speed=20.0, initial_gap_um=300.0) as rig:
        start = rig.counter_pulses
        furthest = start

        async def watch() -> None:  # the model's counter, every ~2 ms of wall time, for the whole approach
            nonlocal furthest
            while True:
                rig.sim.model.advance()
                furthest = max(furthest, rig.counter_pulses)
                await asyncio.sleep(0.002)

        watcher = asyncio.get_running_loop().create_task(watch(), name="counter-watch")
        try:
            with pytest.raises(ApproachError, match="no contact within the allowed travel"):
                await rig.ctl.engage(50.0, max_approach_um=allowed_um)
            await rig.ctl.wait_cycles(5)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        assert rig.ctl.mode is ControllerMode.IDLE
        back = rig.counter_pulses == start
    over_um = max(0.0, (furthest - start) * UM - allowed_um)
    fault_figure(
        7,
        "no contact: travel past the allowed approach",
        f"{over_um:.3f} µm; returned {back}",
        goal="0 µm, abort",
        met=over_um == 0.0 and back,
    )
    assert over_um == 0.0 and back
    assert (furthest - start) * UM >= 0.5 * allowed_um  # it did search: the watch saw the approach
