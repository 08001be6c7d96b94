"""Fault matrix row 11: the event loop is blocked for 500 ms during plating.

Expected: the supervisor raises the lag alarm (a "lag" hold suspends the run: current off, pressure held), no press
move is made on data older than the block, and the run resumes by itself once the loop is healthy again.
Against the in-process simulator (which shares the blocked loop, so its replies are produced after the block; a
reply that waited in a buffer through the block is the case the controller's reading-age rule covers, row 1).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rig.control.controller import ControlSample
from rig.data.store import read_events
from rig.run.engine import RunState
from tests.conftest import FaultFigure
from tests.support.run_harness import running

BLOCK_S = 0.5


async def test_a_blocked_event_loop_raises_the_lag_alarm_and_nothing_moves_on_old_data(
    tmp_path: Path, fault_figure: FaultFigure
) -> None:
    async with running(tmp_path, speed=5.0) as r:
        await r.until(lambda: r.true_current_a() < -1e-5, "plating")
        await r.rig.clock.sleep(3.0)
        q = r.rig.ctl.subscribe()
        loop = asyncio.get_running_loop()
        unblocked: list[float] = []  # (wall) when the block ended
        exp_unblocked: list[float] = []
        t_before_block = r.rig.clock.now()

        def block() -> None:
            time.sleep(BLOCK_S)  # a blocking call in the loop: nothing else runs for 500 ms
            unblocked.append(loop.time())
            exp_unblocked.append(r.rig.clock.now())

        loop.call_soon(block)
        await r.until(lambda: "lag" in r.engine.hold_ages(), "the lag alarm", 30)
        t_alarm = loop.time()
        assert r.engine.state is RunState.SUSPENDED
        samples: list[ControlSample] = []
        while not q.empty():
            samples.append(q.get_nowait())
        r.rig.ctl.unsubscribe(q)
        await r.until(lambda: r.engine.state is RunState.RUNNING, "the automatic resume", 120.0)
        await r.until(lambda: r.true_current_a() < -1e-5, "current again", 120.0)
    latency_ms = 1e3 * (t_alarm - unblocked[0])
    after = [s for s in samples if s.t_s >= t_before_block]
    # a move after the block must come from a reading taken after it (its timestamp is the reading's own)
    old_moves = [s for s in after if s.pulses and s.t_s < exp_unblocked[0]]
    events = read_events(tmp_path / "run.sqlite")
    # the lag hold's safe-state entry (on a loaded host the load cell's stale hold may suspend the run first, then the
    # state change names that hold instead: what matters is that the lag hold was taken and the run resumed)
    lag_events = [e for e in events if e["kind"] == "alarm" and e["data"].get("condition") == "lag"]
    fault_figure(
        11,
        "lag alarm latency after the 500 ms block",
        f"{latency_ms:.0f} ms (wall)",
        goal="≤ 100 ms",
        met=latency_ms <= 100.0,
    )
    fault_figure(11, "moves on data older than the block", str(len(old_moves)), goal="0", met=not old_moves)
    assert not old_moves
    assert lag_events and "event loop lag" in lag_events[0]["message"]
    assert any("suspended -> running" in e["message"] for e in events if e["kind"] == "state")
