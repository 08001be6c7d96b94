"""The supervisor's silence backstop (pure logic: a stand-in controller that publishes samples by hand).

A control loop that publishes nothing at all for `silent_wall_s` means the load cell counts as stale and the run
is held. Before the loop's first sample it is still connecting and reading, which took just over 0.1 s on a
`rig run --sim` at 1x: every run began with a hold and a safe-state alarm. The first sample gets a longer grace.
A sample that is already queued when the wait times out is not silence.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from rig.control.controller import ControllerMode, ControlSample
from rig.run.supervisor import Supervisor, SupervisorSettings


class _Clock:
    speed = 1.0

    def now(self) -> float:
        return time.monotonic()


class _Controller:
    """Only what the supervisor calls."""

    press_problem = ""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[ControlSample] | None = None

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue[ControlSample]:
        self.queue = asyncio.Queue(maxsize=maxsize)
        return self.queue

    def unsubscribe(self, q: asyncio.Queue[ControlSample]) -> None:
        self.queue = None

    def sample_period_s(self) -> float:
        return 0.04

    def publish(self, t_s: float) -> None:
        assert self.queue is not None
        self.queue.put_nowait(ControlSample(t_s, ControllerMode.HOLD, True, "", 100.0, 11.3, 100.0, 100.0, 500.0, 0))


class _Engine:
    watch_pressure = False

    def __init__(self) -> None:
        self.holds: list[tuple[str, str]] = []

    def suspend(self, key: str, message: str, **data: Any) -> None:
        self.holds.append((key, message))

    def clear_hold(self, key: str) -> None:
        pass

    def hold_ages(self) -> dict[str, float]:
        return {}

    def escalate(self, reason: str) -> None:
        raise AssertionError(reason)

    def overforce(self, detail: str) -> None:
        raise AssertionError(detail)


def _supervisor(clock: _Clock, ctl: _Controller, engine: _Engine) -> Supervisor:
    return Supervisor(
        engine=engine,  # type: ignore[arg-type]
        controller=ctl,  # type: ignore[arg-type]
        clock=clock,
        settings=SupervisorSettings(silent_wall_s=0.1, first_sample_wall_s=2.0),
    )


async def _watch(first_sample_after_s: float, then_silent_s: float) -> list[tuple[str, str]]:
    clock, ctl, engine = _Clock(), _Controller(), _Engine()
    sup = _supervisor(clock, ctl, engine)
    await sup.start()
    try:
        await asyncio.sleep(first_sample_after_s)
        end = clock.now() + 0.5
        while clock.now() < end:  # samples every 40 ms
            ctl.publish(clock.now())
            await asyncio.sleep(0.04)
        await asyncio.sleep(then_silent_s)
    finally:
        await sup.stop()
    return engine.holds


async def test_a_slow_first_sample_is_not_a_stale_load_cell() -> None:
    holds = await _watch(first_sample_after_s=0.5, then_silent_s=0.0)
    assert holds == []


async def test_silence_after_the_first_sample_holds_the_run_and_so_does_a_loop_that_never_starts() -> None:
    holds = await _watch(first_sample_after_s=0.0, then_silent_s=0.3)
    assert [k for k, _ in holds] == ["force"] and "no sample from the control loop" in holds[0][1]
    holds = await _watch(first_sample_after_s=2.5, then_silent_s=0.0)
    assert [k for k, _ in holds] == ["force"] and "no sample from the control loop" in holds[0][1]


async def test_a_sample_published_late_does_not_turn_the_silence_clock_back() -> None:
    """The approach's first reading is published after the tare's burst of ten (newer) readings: its older time
    must not make the loop look silent (every `rig run` began with that hold before)."""
    clock, ctl, engine = _Clock(), _Controller(), _Engine()
    sup = _supervisor(clock, ctl, engine)
    await sup.start()
    try:
        first = clock.now()
        for _ in range(10):  # the tare's readings, published as they come
            await asyncio.sleep(0.012)
            ctl.publish(clock.now())
        ctl.publish(first)  # the reading the burst began with, 0.12 s old
        end = clock.now() + 0.4
        while clock.now() < end:
            await asyncio.sleep(0.04)
            ctl.publish(clock.now())
    finally:
        await sup.stop()
    assert engine.holds == []
