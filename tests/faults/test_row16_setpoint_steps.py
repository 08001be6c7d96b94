"""Fault matrix row 16: set-point steps 10→250→10 kPa and a gain change, across stiffness ×0.1–×10.

Against the in-process simulator through the real drivers. The judge is the model's true pressure (overshoot) and
the controller's own per-cycle moves (derivative kick: a set-point change must not produce a move larger than the
ramp's own moves, because the reference is ramped, never stepped).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from rig.control.controller import ControlSample
from tests.conftest import FaultFigure
from tests.control.harness import ControlledRig, TruthRecorder, controlled_rig

GOAL_OVERSHOOT = 0.02  # of the step
LOW, HIGH = 10.0, 250.0


async def _moves_after_change(rig: ControlledRig, cycles: int) -> list[int]:
    """|pulses| of the next `cycles` usable loop cycles."""
    q = rig.ctl.subscribe()
    moves: list[int] = []
    try:
        while len(moves) < cycles:
            s: ControlSample = await q.get()
            if s.usable:
                moves.append(abs(s.pulses))
    finally:
        rig.ctl.unsubscribe(q)
    return moves


def _kick(moves: list[int]) -> float:
    """The first two cycles' largest move against the median non-zero move of the ramp after them (1.0: none)."""
    ramp = [m for m in moves[2:] if m]
    first = max(moves[:2])
    if first == 0:
        return 0.0
    return first / statistics.median(ramp) if ramp else float("inf")


@pytest.mark.parametrize("scale", [0.1, 1.0, 10.0])
async def test_setpoint_steps_are_ramped_and_bumpless(tmp_path: Path, scale: float, fault_figure: FaultFigure) -> None:
    async with controlled_rig(tmp_path, scale=scale, speed=10.0) as rig:
        ctl = rig.ctl
        await ctl.engage(LOW)
        await ctl.wait_settled(timeout_s=120.0)
        ref_before = ctl.status().reference_kpa
        async with TruthRecorder(rig) as up:
            ctl.set_setpoint(HIGH)
            ref_jump_up = abs(ctl.status().reference_kpa - ref_before)
            kick_up = _kick(await _moves_after_change(rig, 30))
            await ctl.wait_settled(hold_s=3.0, timeout_s=300.0)
        # a gain change while holding: bumpless (no move beyond the deadband, no pressure bump)
        async with TruthRecorder(rig) as gain:
            ctl.set_gain(0.5 * ctl.law.gain)
            await ctl.wait_cycles(50)
            ctl.set_gain(2.0 * ctl.law.gain)
            await ctl.wait_cycles(50)
        deadband_kpa = ctl.status().deadband_kpa
        ref_before = ctl.status().reference_kpa
        async with TruthRecorder(rig) as down:
            ctl.set_setpoint(LOW)
            ref_jump_down = abs(ctl.status().reference_kpa - ref_before)
            kick_down = _kick(await _moves_after_change(rig, 30))
            await ctl.wait_settled(hold_s=3.0, timeout_s=300.0)
    overshoot = (max(up.values) - HIGH) / (HIGH - LOW)
    undershoot = (LOW - min(down.values)) / (HIGH - LOW)
    gain_bump = max(abs(v - HIGH) for v in gain.values)
    worst = max(overshoot, undershoot)
    kick = max(kick_up, kick_down)
    fault_figure(
        16,
        f"overshoot up/down at ×{scale:g}",
        f"{100 * overshoot:.2f} % / {100 * undershoot:.2f} %",
        goal="≤ 2 %",
        met=worst <= GOAL_OVERSHOOT,
    )
    fault_figure(
        16,
        f"derivative kick at ×{scale:g} (1st move/ramp)",
        f"{kick:.2f}× (ref. jump {max(ref_jump_up, ref_jump_down):.2f} kPa)",
        goal="≤ 1.5×, 0 kPa",
        met=kick <= 1.5 and max(ref_jump_up, ref_jump_down) < 0.5,
    )
    fault_figure(
        16,
        f"gain change bump at ×{scale:g}",
        f"{gain_bump:.2f} kPa (deadband {deadband_kpa:.2f})",
        goal="within band",
        met=gain_bump <= max(2 * deadband_kpa + 1.0, 0.02 * HIGH),
    )
    assert worst <= GOAL_OVERSHOOT
    assert max(ref_jump_up, ref_jump_down) < 0.5  # the reference starts where it was: ramped, not stepped
    assert kick <= 1.5
    assert gain_bump <= max(2 * deadband_kpa + 1.0, 0.02 * HIGH)
    assert up.values[-1] == pytest.approx(HIGH, abs=0.02 * HIGH)
    assert down.values[-1] == pytest.approx(LOW, abs=1.5)
