"""Potentiostat compliance during plating suspends the run (current off, pressure held) and resumes by itself;
compliance that keeps coming back ends the run. Against the simulated 2450 with its compliance fault."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rig.data.store import read_events
from rig.run.engine import RunState
from tests.support.run_harness import running


async def test_brief_compliance_suspends_and_the_run_resumes_by_itself(tmp_path: Path) -> None:
    async with running(tmp_path, speed=5.0) as r:
        await r.until(lambda: r.true_current_a() < -1e-5, "plating")
        r.rig.sim.faults["potentiostat"].set(compliance_trip=True)
        await r.until(lambda: "compliance" in r.engine.hold_ages(), "the compliance suspension", 60.0)
        await r.until(lambda: r.true_current_a() == 0.0, "current off", 30.0)
        assert r.rig.ctl.mode.value == "hold"  # the pressure is still held
        r.rig.sim.faults["potentiostat"].clear()
        await r.until(lambda: r.engine.state is RunState.RUNNING, "the automatic resume", 120.0)
        await r.until(lambda: r.true_current_a() < -1e-5, "current again", 120.0)
    msgs = [e["message"] for e in read_events(tmp_path / "run.sqlite") if e["kind"] == "state"]
    assert any("running -> suspended: potentiostat in compliance" in m for m in msgs)
    assert any("suspended -> running" in m for m in msgs)


async def test_compliance_that_keeps_coming_back_ends_the_run(tmp_path: Path) -> None:
    async with running(tmp_path, speed=10.0) as r:
        await r.until(lambda: r.true_current_a() < -1e-5, "plating")
        r.rig.sim.faults["potentiostat"].set(compliance_trip=True)
        async with asyncio.timeout(120):
            result = await asyncio.shield(r.task)
        current_after = r.true_current_a()
    assert result.state is RunState.ABORTED and "in compliance 4 times in one step" in result.reason
    assert current_after == 0.0
