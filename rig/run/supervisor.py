"""The run supervisor: suspender semantics over the pressure controller's sample stream and the event loop.

Conditions (each a named hold on the engine; the engine suspends while any hold is present):
  force       no fresh usable load-cell sample for `stale_periods` controller periods (stale, invalid, silent)
  pressure    the held pressure outside ±`band_frac` of the setpoint for longer than `band_grace_s`
  overforce   the controller tripped (latched: only `rig ack` clears it)
  press       the press drive is not answering or not yet re-verified (the controller makes no motion and
              recovers it: reconnect, travel limits read back, alarms checked); clears once it is verified again
  lag         the event loop woke up later than `lag_threshold_s` (wall) — the control data may be old
  (the engine adds: storage, potentiostat, compliance)

A hold clears only after its condition has been absent for `clear_s` (hysteresis); the engine then re-establishes
the pressure for its settle time before any current flows. A hold that lasts longer than `max_suspend_s`
escalates to an abort. The supervisor never commands a device: it only tells the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rig.control.controller import STALE_REASON, ControllerMode, ControlSample, PressureController

__all__ = ["Supervised", "Supervisor", "SupervisorSettings"]


class Supervised(Protocol):
    """What the supervisor needs from the engine."""

    def suspend(self, key: str, message: str, **data: object) -> None:
        """Add a hold."""
        ...

    def clear_hold(self, key: str) -> None:
        """Remove a hold (the engine resumes when none is left)."""
        ...

    def hold_ages(self) -> dict[str, float]:
        """Experiment seconds each present hold has lasted."""
        ...

    def escalate(self, reason: str) -> None:
        """Abort the run: a condition persisted too long."""
        ...

    @property
    def watch_pressure(self) -> bool:
        """True while the pressure band matters (a current-carrying step after its pressure settled)."""
        ...

    def overforce(self, detail: str) -> None:
        """The controller tripped: latch until the operator acknowledges."""
        ...


class _Clock(Protocol):
    speed: float

    def now(self) -> float: ...


@dataclass(frozen=True)
class SupervisorSettings:
    """Thresholds (experiment seconds unless named wall)."""

    stale_periods: float = 2.0
    band_frac: float = 0.10
    band_grace_s: float = 5.0
    clear_s: float = 2.0
    lag_threshold_s: float = 0.25  # wall
    lag_every_s: float = 0.1  # wall
    max_suspend_s: float = 4 * 3600.0
    min_tick_wall_s: float = 0.02
    min_stale_wall_s: float = 0.04  # backstop floor in wall time (the controller's own stale flag comes first)
    silent_wall_s: float = 0.1  # backstop: no sample at all from the control loop this long in wall time: stale
    first_sample_wall_s: float = 2.0  # the same backstop before the loop's first sample (it connects and reads)
    auto_clear: tuple[str, ...] = ("force", "pressure", "lag", "press")


class Supervisor:
    """Watches the controller samples and the event loop; see the module docstring."""

    def __init__(
        self,
        *,
        engine: Supervised,
        controller: PressureController,
        clock: _Clock,
        settings: SupervisorSettings | None = None,
        on_stale: Callable[[float], None] | None = None,
    ) -> None:
        self._engine = engine
        self._ctl = controller
        self._clock = clock
        self.s = settings or SupervisorSettings()
        self._on_stale = on_stale
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: asyncio.Queue[ControlSample] | None = None
        self._last_usable_t: float | None = None
        self._seen_sample = False
        self._bad_since: dict[str, float] = {}
        self._ok_since: dict[str, float] = {}
        self.active: set[str] = set()
        self.stale_detections: list[tuple[float, float]] = []  # (when, seconds since the last fresh sample)
        self.max_lag_s = 0.0

    async def start(self) -> None:
        """Start watching."""
        self._queue = self._ctl.subscribe(maxsize=256)
        self._last_usable_t = self._clock.now()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._watch_samples(), name="supervisor-samples"),
            loop.create_task(self._watch_lag(), name="supervisor-lag"),
        ]

    async def stop(self) -> None:
        """Stop watching."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if self._queue is not None:
            self._ctl.unsubscribe(self._queue)
            self._queue = None

    @property
    def stale(self) -> bool:
        """The load cell is stale (no fresh usable sample for the stale time)."""
        return "force" in self.active

    # ------------------------------------------------------------------ conditions
    def _bad(self, key: str, message: str, now: float, **data: object) -> None:
        self._ok_since.pop(key, None)
        if key not in self.active:
            self.active.add(key)
            self._engine.suspend(key, message, **data)

    def _good(self, key: str, now: float) -> None:
        if key not in self.active:
            return
        since = self._ok_since.setdefault(key, now)
        if now - since >= self.s.clear_s:
            self.active.discard(key)
            self._ok_since.pop(key, None)
            self._engine.clear_hold(key)

    def _stale_after_s(self) -> float:
        """Stale after `stale_periods` of the sample period the loop really achieves: the controller's own rule
        (a high quantile of recent intervals between fresh samples, see PressureController.sample_period_s)."""
        period = self._ctl.sample_period_s()
        return max(self.s.stale_periods * period, self.s.min_stale_wall_s * self._clock.speed)

    def _silent_after_s(self) -> float:
        """No sample at all from the control loop for this long (experiment s) and the load cell counts as stale;
        before the loop's first sample it is still connecting and making its first read: a longer grace, so a
        run does not start with a hold and an alarm."""
        wall = self.s.silent_wall_s if self._seen_sample else max(self.s.silent_wall_s, self.s.first_sample_wall_s)
        return max(self._stale_after_s(), wall * self._clock.speed)

    async def _watch_samples(self) -> None:
        assert self._queue is not None
        q = self._queue
        while True:
            now = self._clock.now()
            assert self._last_usable_t is not None
            left_exp = self._last_usable_t + self._silent_after_s() - now
            timeout_wall = max(self.s.min_tick_wall_s, left_exp / self._clock.speed)
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that lands as q.get()
            # completes, and this loop would then never stop (a stop() that hangs for ever)
            sample: ControlSample | None = None
            try:
                async with asyncio.timeout(timeout_wall):
                    sample = await q.get()
            except TimeoutError:
                # the timeout and a sample can land in the same loop iteration: a sample already queued is not
                # silence (a late wake-up of this task is the host's doing, not the load cell's)
                sample = None if q.empty() else q.get_nowait()
            now = self._clock.now()
            if sample is not None:
                self._seen_sample = True
                self._on_sample(sample, now)
            elif "force" not in self.active and now - self._last_usable_t > self._silent_after_s():
                self._mark_stale(now, "no sample from the control loop")
            self._check_persistence()

    def _mark_stale(self, now: float, why: str) -> None:
        assert self._last_usable_t is not None
        age = now - self._last_usable_t
        self.stale_detections.append((now, age))
        if self._on_stale is not None:
            self._on_stale(age)
        self._bad("force", f"load cell stale: {why} for {age:.3f} s", now, age_s=age)

    def _on_sample(self, sample: ControlSample, now: float) -> None:
        if sample.mode is ControllerMode.TRIPPED:
            if "overforce" not in self.active:
                self.active.add("overforce")
                trip = self._ctl.status().trip
                self._engine.overforce(str(trip) if trip else "over-force")
            return
        if "overforce" in self.active and sample.mode is not ControllerMode.TRIPPED:
            self.active.discard("overforce")  # acknowledged (the engine ends the run)
        if sample.mode is ControllerMode.FAULT:
            self._engine.escalate(f"pressure controller fault: {self._ctl.status().last_error}")
            return
        if not sample.press_ok:
            self._bad("press", f"press not answering: {self._ctl.press_problem}", now)
        else:
            self._good("press", now)
        if not sample.usable:
            # the controller's own freshness rules rejected the reading (stale, silent, invalid, frozen)
            # the controller applied the 2-period rule itself (its timer fires up to a tenth early to cover its own
            # latency); the wall-time floor (raised for heavily accelerated simulation, rig.cli.run_cmd) still holds
            flagged = sample.reason.startswith(STALE_REASON)
            age = now - (self._last_usable_t or now)
            limit = 0.9 * self.s.min_stale_wall_s * self._clock.speed if flagged else self._stale_after_s()
            if "force" not in self.active and age >= limit:
                self._mark_stale(now, sample.reason or "unusable")
            return
        # a sample is published after its reading; one read before a burst (the tare) comes after the burst
        self._last_usable_t = max(self._last_usable_t or sample.t_s, sample.t_s)
        self._good("force", now)
        p = sample.pressure_kpa
        sp = sample.setpoint_kpa
        steady = sample.mode is ControllerMode.HOLD and abs(sample.reference_kpa - sp) < 0.5
        if p is None or not steady or sp <= 0 or not self._engine.watch_pressure:
            self._bad_since.pop("pressure", None)
            return
        off = abs(p - sp)
        if off > self.s.band_frac * sp:
            since = self._bad_since.setdefault("pressure", now)
            if now - since >= self.s.band_grace_s:
                self._bad("pressure", f"pressure {p:.1f} kPa out of band around {sp:g} kPa", now, pressure_kpa=p)
        else:
            self._bad_since.pop("pressure", None)
            if off <= 0.5 * self.s.band_frac * sp:
                self._good("pressure", now)

    async def _watch_lag(self) -> None:
        loop = asyncio.get_running_loop()
        every = self.s.lag_every_s
        while True:
            t0 = loop.time()
            await asyncio.sleep(every)
            lag = loop.time() - t0 - every
            self.max_lag_s = max(self.max_lag_s, lag)
            now = self._clock.now()
            if lag > self.s.lag_threshold_s:
                self._bad("lag", f"event loop lag {lag * 1e3:.0f} ms", now, lag_ms=lag * 1e3)
            else:
                self._good("lag", now)

    def _check_persistence(self) -> None:
        for key, age in self._engine.hold_ages().items():
            if key in ("operator", "overforce"):
                continue
            if age > self.s.max_suspend_s:
                self._engine.escalate(f"suspended for {age:.0f} s ({key}): the condition persisted")
                return
