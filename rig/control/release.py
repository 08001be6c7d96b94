"""Releasing the stack's pressure at the end of a run (or by `rig safe --release`), with every wait bounded.

A release is the controller ramping the force down and backing the press off. It needs the press and the load cell
to answer; if either stops answering (a vanished simulator, an unplugged adapter) for `silence_wall_s`, or the whole
release takes longer than `timeout_wall_s`, it is given up: the pressure stays held where it is (as far as the
devices allow) and the caller says so in one line ("pressure not released: press not answering ...").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

from rig.control.controller import ControllerMode, ControllerStatus, PressureController

RELEASE_SILENCE_WALL_S = 10.0
RELEASE_TIMEOUT_WALL_S = 600.0


class ReleaseAbandoned(Exception):
    """The release was given up; the message says why."""


class _Clock(Protocol):
    speed: float

    def now(self) -> float: ...


def device_problem(st: ControllerStatus) -> str | None:
    """Why the press or the load cell cannot be used now, or None."""
    if st.press_problem:
        return f"press not answering ({st.press_problem})"
    if st.mode is ControllerMode.FAULT:
        return f"pressure controller fault ({st.last_error})"
    if not st.sensor_ok:
        return f"load cell not answering ({st.last_reject or 'no usable reading'})"
    return None


async def release_bounded(
    ctl: PressureController,
    *,
    clock: _Clock,
    preload_kpa: float,
    tick: Callable[[], None],
    tick_s: float,
    silence_wall_s: float = RELEASE_SILENCE_WALL_S,
    timeout_wall_s: float = RELEASE_TIMEOUT_WALL_S,
) -> None:
    """Release to `preload_kpa`, calling `tick()` every `tick_s` experiment seconds; raises `ReleaseAbandoned`."""
    release = asyncio.ensure_future(ctl.release(preload_kpa=preload_kpa))
    t0 = clock.now()
    silent_since: float | None = None
    try:
        while not release.done():
            await asyncio.wait({release}, timeout=tick_s / clock.speed)
            tick()
            if release.done():
                break
            now = clock.now()
            problem = device_problem(ctl.status())
            if problem is None:
                silent_since = None
            elif silent_since is None:
                silent_since = now
            elif now - silent_since >= silence_wall_s * clock.speed:
                raise ReleaseAbandoned(f"{problem} for {silence_wall_s:g} s")
            if now - t0 >= timeout_wall_s * clock.speed:
                raise ReleaseAbandoned(f"not done after {timeout_wall_s:g} s")
        release.result()
    finally:
        if not release.done():
            release.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await release
