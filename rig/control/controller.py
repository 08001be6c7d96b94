"""The closed-loop pressure controller: the async shell around `rig.control.law`, sole owner of the press.

One task runs the loop from `start()` to `stop()`, whatever the protocol is doing. Each cycle it reads the
force once, checks the reading (valid, new sequence number, young, not frozen) and the absolute over-force
limit, and then, depending on the mode, makes at most one move:

    IDLE      read and watch only
    APPROACH  from an open gap, small steps until the force rises above the contact threshold
    HOLD      ramp to the setpoint and hold it (the law decides)
    RELEASE   ramp down to a preload, or to contact and then back to the open position
    TRIPPED   over-force: stopped and retreated; latched until `acknowledge_overforce()`
    FAULT     an unexpected error: no motion until `stop()`

A press that does not answer (a move or a read-back fails after the bus's bounded retries, or its port was
re-opened since it was verified) makes no motion: the loop keeps reading the force, publishes `press_ok=False`
(the supervisor suspends the run on it) and a recovery task stops the drive, sets and reads back its travel limits,
checks it for alarms, re-sends the motion limits and reads the position back before any move is allowed again.
A move is never re-sent: after the recovery the law starts again from the read-back position. Likewise a load
cell whose port was re-opened is verified again (`verify_safe()`) before its readings are used.

Guard rails live in the loop: an invalid or stale reading produces no motion; the over-force trip uses the
absolute (untared, calibration-referenced) force, which a tare does not move; every target is clipped to the
travel limits, and the drive's own software limits are set to the same window as the backstop.

Time: every timestamp and period comes from the injected experiment clock (`rig.clock.ExperimentClock`), the
same one the drivers stamp their readings with. Pressure = force / electrode area.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
import statistics
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

from drivers.errors import DeviceError
from drivers.interfaces import ForceReading, ForceSensor, ForceStatus, Press
from rig.config import RigConfig
from rig.control.law import (
    FrozenCheck,
    JumpFilter,
    LawSettings,
    Move,
    PressureLaw,
    SetpointRamp,
    classify_reading,
    deposit_growth_um,
    robust_period_s,
    saturation_may_be_real,
)

__all__ = [
    "ApproachError",
    "ControlClock",
    "ControlSample",
    "ControllerFault",
    "ControllerMode",
    "ControllerSettings",
    "ControllerStatus",
    "OverForceTrip",
    "OverForceTripped",
    "PressureController",
]


STALE_REASON = "stale: no fresh sample"  # how a sample published by the stale timer starts (rig.run.supervisor)
_ON_TIME_WALL_S = 0.003  # a wait that overran by more than this (wall) means the host, not the sensor, was late


class ControlClock(Protocol):
    """The experiment clock the controller runs on (`rig.clock.ExperimentClock`)."""

    speed: float

    def now(self) -> float:
        """Experiment seconds."""
        ...

    async def sleep(self, experiment_s: float) -> None:
        """Sleep for experiment seconds."""
        ...


@runtime_checkable
class _VerifiableSensor(Protocol):
    async def verify_safe(self) -> dict[str, object]: ...


def _reverify_needed(device: object) -> bool:
    """The driver says its port was re-opened since it was verified (drivers without the notion: never)."""
    return bool(getattr(device, "reverify_needed", False))


class ApproachError(RuntimeError):
    """No contact was found within the allowed travel."""


class OverForceTripped(RuntimeError):
    """The absolute over-force limit tripped; the controller is latched until acknowledged."""


class ControllerFault(RuntimeError):
    """The loop hit an unexpected error and stopped moving the press."""


class ControllerMode(enum.Enum):
    """What the loop is doing."""

    STOPPED = "stopped"
    IDLE = "idle"
    APPROACH = "approach"
    HOLD = "hold"
    RELEASE = "release"
    TRIPPED = "tripped"
    FAULT = "fault"


@dataclass(frozen=True)
class ControllerSettings:
    """Tuning of the controller shell; the law's own tuning is `law`."""

    period_s: float = 0.04  # experiment seconds per cycle (25 Hz at speed 1)
    ramp_kpa_per_s: float = 40.0
    contact_threshold_kpa: float = 2.5
    contact_confirm_readings: int = 2
    approach_step_um: float | None = None  # None: ½ lowest setpoint force / k_max (small overshoot at ×10)
    max_approach_um: float | None = None  # None: up to the upper travel limit
    tare_readings: int = 10
    stale_periods: float = 2.0  # of the actual sample period (see sample_period_s()): then the data are stale
    period_window: int = 64  # recent intervals between fresh samples the actual period is taken from
    period_quantile: float = 0.9
    period_floor_wall_s: float = 0.02  # the finest schedule a shared host keeps (× speed in experiment time)
    frozen_after_reads: int = 12  # identical values in a row = a frozen sensor (0: off)
    frozen_sigmas: float = 10.0  # motion/force cross-check: expected change in noise levels before "frozen"
    spike_steps: float = 3.0  # a change beyond this many per-cycle move limits (+ 10 noise) in one period: a spike
    retreat_margin_um: float = 50.0  # over-force: back to this far before the contact position
    retreat_um: float = 200.0  # over-force with no known contact position: back by this much
    max_step_kpa: float = 10.0  # per-cycle force change the move limit allows at the assumed stiffness
    k_max_n_per_um: float = 0.4  # the stiffest stack the rig can have
    step_travel_fraction: float = 0.8  # of what the press travels in one period
    feed_forward: bool = True
    press_retry_s: float = 0.5  # between recovery attempts of a press that does not answer (wall floor 50 ms)
    settle_tolerance_kpa: float | None = None  # None: 1 % of the setpoint, at least the deadband
    stats_window: int = 4096
    law: LawSettings = field(default_factory=LawSettings)

    def __post_init__(self) -> None:
        for name in ("period_s", "ramp_kpa_per_s", "contact_threshold_kpa", "max_step_kpa", "k_max_n_per_um"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ControllerSettings.{name} must be a positive number, got {value!r}")


@dataclass(frozen=True)
class OverForceTrip:
    """One over-force event."""

    t_s: float
    force_n: float  # absolute (untared) force that tripped
    limit_n: float
    position_um: float
    retreated_to_um: float | None
    detail: str = ""


@dataclass(frozen=True)
class ControlSample:
    """One loop cycle, published to subscribers."""

    t_s: float
    mode: ControllerMode
    usable: bool
    reason: str
    pressure_kpa: float | None
    force_abs_n: float | None
    reference_kpa: float
    setpoint_kpa: float
    position_um: float
    pulses: int
    press_ok: bool = True  # False while the press is not answering or not yet re-verified (no motion)


@dataclass(frozen=True)
class ControllerStatus:
    """A snapshot for the run engine, telemetry and the display."""

    mode: ControllerMode
    setpoint_kpa: float
    reference_kpa: float
    pressure_kpa: float | None
    force_abs_n: float | None
    tare_n: float
    position_um: float
    contact_um: float | None
    stiffness_n_per_um: float
    deadband_kpa: float
    noise_n: float
    feed_forward: bool
    cell_current_a: float
    growth_scale: float  # real growth / predicted dense growth (estimate)
    drift_um_per_s: float  # learned slow drift of the stack (creep: negative)
    predicted_growth_um: float
    saturated: bool
    sensor_ok: bool
    last_reject: str
    cycles: int
    moves: int
    invalid_readings: int
    stale_readings: int
    read_errors: int
    move_errors: int
    overruns: int
    rate_hz: float  # cycles per wall second
    period_p50_ms: float  # wall
    jitter_p99_ms: float  # wall, |period − nominal period|
    trip: OverForceTrip | None
    last_error: str
    press_problem: str = ""  # why the press is unusable now ("" = verified and answering)
    press_outages: int = 0
    press_recoveries: int = 0


class PressureController:
    """Holds the stack pressure with the press; see the module docstring. Use `async with` or start()/stop()."""

    def __init__(
        self,
        *,
        force: ForceSensor,
        press: Press,
        clock: ControlClock,
        area_m2: float,
        hard_force_limit_n: float,
        travel_um: tuple[float, float],
        min_pressure_kpa: float = 10.0,
        max_pressure_kpa: float = 250.0,
        velocity_rpm: int = 60,
        accel_ms_per_krpm: int = 100,
        decel_ms_per_krpm: int = 100,
        pulses_per_rev: int = 3200,
        settings: ControllerSettings | None = None,
    ) -> None:
        s = settings or ControllerSettings()
        if not area_m2 > 0:
            raise ValueError(f"electrode area must be > 0 m², got {area_m2}")
        lower, upper = travel_um
        if not lower < upper:
            raise ValueError(f"travel limits must satisfy lower < upper, got {travel_um}")
        if not 0 < min_pressure_kpa < max_pressure_kpa:
            raise ValueError(f"need 0 < min_pressure_kpa < max_pressure_kpa, got {min_pressure_kpa}/{max_pressure_kpa}")
        max_force_n = max_pressure_kpa * 1e3 * area_m2
        if not hard_force_limit_n > max_force_n:
            raise ValueError(
                f"rig.hard_force_limit_n = {hard_force_limit_n} N must lie above the force of the maximum setpoint "
                f"({max_pressure_kpa} kPa × {area_m2 * 1e4:.3f} cm² = {max_force_n:.2f} N)"
            )
        self._force = force
        self._press = press
        self._clock = clock
        self.area_m2 = area_m2
        self.hard_force_limit_n = hard_force_limit_n
        self.travel_um = (lower, upper)
        self.min_pressure_kpa = min_pressure_kpa
        self.max_pressure_kpa = max_pressure_kpa
        self._motion = (velocity_rpm, accel_ms_per_krpm, decel_ms_per_krpm)
        self._p = press.um_per_pulse
        self._speed_um_per_s = velocity_rpm / 60.0 * pulses_per_rev * self._p
        kpa_n = 1e3 * area_m2
        law_settings = replace(
            s.law,
            um_per_pulse=self._p,
            k_max_n_per_um=s.k_max_n_per_um,
            max_step_force_n=s.max_step_kpa * kpa_n,
            learn_above_n=s.contact_threshold_kpa * kpa_n,
        )
        self.settings = replace(s, law=law_settings)
        self.law = PressureLaw(law_settings)
        self._ramp = SetpointRamp(0.0)
        self._ramp_rate_kpa_per_s = s.ramp_kpa_per_s
        self._mode = ControllerMode.STOPPED
        self._task: asyncio.Task[None] | None = None
        self._feed_forward = s.feed_forward
        self._current_a = 0.0
        self._setpoint_kpa = 0.0
        self._position_um = 0.0
        self._position_uncertain = True
        self._tare_n = 0.0
        self._tared = False
        self._device_offset_n = 0.0
        self._contact_um: float | None = None
        self._approach_start_um: float | None = None
        self._approach_limit_um = upper
        self._approach_started = False
        self._approach_tare = True
        self._contact_count = 0
        self._release_preload_kpa = 0.0
        self._release_retreating = False
        self._pending: asyncio.Future[None] | None = None
        self._commands: deque[tuple[Callable[[], Awaitable[None]], asyncio.Future[None]]] = deque()
        self._trip: OverForceTrip | None = None
        self._last_error = ""
        self._last_seq: int | None = None
        self._last_value: float | None = None
        self._identical = 0
        self._last_usable_t: float | None = None
        self._last_fresh_t: float | None = None  # reading time of the last usable sample (stale clock)
        self._fresh_intervals: deque[float] = deque(maxlen=s.period_window)
        self._stale_flagged = False
        self._rejected_since_fresh = False
        self._frozen = FrozenCheck(sigmas=s.frozen_sigmas)
        self._jumps = JumpFilter()
        self._last_reading_t: float | None = None
        self._last_force_abs: float | None = None
        self._last_pressure: float | None = None
        self._last_reject = ""
        self._sensor_ok = False
        self._saturated = False
        self._predicted_growth_um = 0.0
        self._period_ema_s = s.period_s
        self._periods: deque[float] = deque(maxlen=s.stats_window)
        self._t_prev_cycle: float | None = None
        self._timing_cache: tuple[int, tuple[float, float, float]] | None = None
        self._counts = {
            "cycles": 0,
            "moves": 0,
            "invalid": 0,
            "stale": 0,
            "read_errors": 0,
            "move_errors": 0,
            "overruns": 0,
            "press_outages": 0,
            "press_recoveries": 0,
        }
        self._press_problem: str | None = None  # None: the press is verified and answering
        self._press_task: asyncio.Task[None] | None = None
        self._cycle_event = asyncio.Event()
        self._in_cycle = False
        self._stopping = False
        self._subscribers: list[asyncio.Queue[ControlSample]] = []
        self.dropped_samples = 0

    # ------------------------------------------------------------------------------------------ construction

    @classmethod
    def from_config(
        cls,
        cfg: RigConfig,
        *,
        force: ForceSensor,
        press: Press,
        clock: ControlClock,
        settings: ControllerSettings | None = None,
    ) -> PressureController:
        """Build from the rig configuration: area, pressure range, over-force limit, travel and motion."""
        pc = cfg.press
        return cls(
            force=force,
            press=press,
            clock=clock,
            area_m2=cfg.rig.area_m2,
            hard_force_limit_n=cfg.rig.hard_force_limit_n,
            travel_um=(pc.travel_min_um, pc.travel_max_um),
            min_pressure_kpa=cfg.rig.min_pressure_kpa,
            max_pressure_kpa=cfg.rig.max_pressure_kpa,
            velocity_rpm=pc.velocity_rpm,
            accel_ms_per_krpm=pc.accel_ms_per_krpm,
            decel_ms_per_krpm=pc.decel_ms_per_krpm,
            pulses_per_rev=pc.pulses_per_rev,
            settings=settings,
        )

    # ------------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, make the devices safe (tracking off, travel limits set and read back, no alarm), start the loop."""
        if self._task is not None:
            raise RuntimeError("pressure controller: already started")
        await self._force.connect()
        await self._press.connect()
        if isinstance(self._force, _VerifiableSensor):
            await self._force.verify_safe()
        lower, upper = self.travel_um
        await self._press.verify_safe(lower, upper)  # the same check as `rig check`: limits, alarm, fault, enabled
        velocity, accel, decel = self._motion
        await self._press.set_motion_limits(velocity_rpm=velocity, accel_ms_per_krpm=accel, decel_ms_per_krpm=decel)
        self._position_um = self._snap(await self._press.position_um())
        self._position_uncertain = False
        self._mode = ControllerMode.IDLE
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pressure-controller")

    async def stop(self) -> None:
        """Stop the loop and the press (where it is: no release); pending requests fail."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True  # the loop ends after the cycle in progress: no bus transaction is cut off
            if self._in_cycle and not task.done():
                await asyncio.wait({task}, timeout=2.0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        press_task, self._press_task = self._press_task, None
        if press_task is not None:
            press_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await press_task
        self._fail_pending(ControllerFault("pressure controller stopped"))
        self._fail_commands(ControllerFault("pressure controller stopped"))
        if self._mode is not ControllerMode.STOPPED:
            with contextlib.suppress(DeviceError, RuntimeError):
                await self._press.stop()
        self._mode = ControllerMode.STOPPED

    async def __aenter__(self) -> PressureController:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------------------------------ commands

    async def engage(
        self,
        setpoint_kpa: float,
        *,
        ramp_kpa_per_s: float | None = None,
        max_approach_um: float | None = None,
        tare_at_open_gap: bool = True,
    ) -> None:
        """Find contact from the open gap (tare there first), then ramp to `setpoint_kpa` and hold it.

        Returns once contact is found and the hold has begun; raises `ApproachError` when there is no contact
        within the allowed travel (the press then returns to where it started).
        """
        self._check_setpoint(setpoint_kpa)
        self._require_running()
        if self._mode in (ControllerMode.HOLD, ControllerMode.RELEASE):
            self.set_setpoint(setpoint_kpa, ramp_kpa_per_s=ramp_kpa_per_s)
            return
        if self._mode is not ControllerMode.IDLE:
            raise self._not_ready("engage")
        if ramp_kpa_per_s is not None:
            self.set_ramp_rate(ramp_kpa_per_s)
        self._setpoint_kpa = setpoint_kpa
        travel = max_approach_um if max_approach_um is not None else self.settings.max_approach_um
        start = self._position_um
        self._approach_start_um = start
        self._approach_limit_um = min(self.travel_um[1], start + travel) if travel is not None else self.travel_um[1]
        self._approach_started = False
        self._approach_tare = tare_at_open_gap
        self._contact_count = 0
        await self._await_mode_change(ControllerMode.APPROACH)

    def set_setpoint(self, setpoint_kpa: float, *, ramp_kpa_per_s: float | None = None) -> None:
        """Ramp to a new setpoint from where the reference is now (bumpless); valid while holding."""
        self._check_setpoint(setpoint_kpa)
        if self._mode not in (ControllerMode.HOLD, ControllerMode.RELEASE):
            raise self._not_ready("set a setpoint")
        if ramp_kpa_per_s is not None:
            self.set_ramp_rate(ramp_kpa_per_s)
        if self._mode is ControllerMode.RELEASE:
            self._fail_pending(ControllerFault("release superseded by a new setpoint"))
            self._mode = ControllerMode.HOLD
        self._setpoint_kpa = setpoint_kpa
        self._retarget(setpoint_kpa)

    def set_ramp_rate(self, ramp_kpa_per_s: float) -> None:
        """Change the ramp rate (kPa per experiment second) for this and later setpoint changes."""
        if not (math.isfinite(ramp_kpa_per_s) and ramp_kpa_per_s > 0):
            raise ValueError(f"ramp rate must be a positive number of kPa/s, got {ramp_kpa_per_s}")
        self._ramp_rate_kpa_per_s = ramp_kpa_per_s
        self._ramp.rate_n_per_s = ramp_kpa_per_s * 1e3 * self.area_m2

    def set_gain(self, gain: float) -> None:
        """Change the law's gain (fraction of the predicted correction per cycle); bumpless."""
        self.law.set_gain(gain)

    def set_feed_forward(self, enabled: bool) -> None:
        """Switch the plating feed-forward on or off."""
        self._feed_forward = enabled

    def set_cell_current(self, current_a: float) -> None:
        """Feed-forward input: the cell current now (A; negative plates Na, see drivers.interfaces)."""
        if not math.isfinite(current_a):
            raise ValueError(f"cell current must be finite, got {current_a}")
        self._current_a = current_a

    async def release(self, *, preload_kpa: float = 0.0, ramp_kpa_per_s: float | None = None) -> None:
        """Ramp down to `preload_kpa` and hold it, or (0) to contact and back to the open position."""
        self._require_running()
        if preload_kpa < 0 or preload_kpa > self.max_pressure_kpa:
            raise ValueError(f"preload must be 0..{self.max_pressure_kpa} kPa, got {preload_kpa}")
        if self._mode is ControllerMode.IDLE:
            return
        if self._mode not in (ControllerMode.HOLD, ControllerMode.RELEASE):
            raise self._not_ready("release")
        if self._press_problem is not None:  # it cannot move: the stack stays held where it is
            raise ControllerFault(f"cannot release: the press is not answering ({self._press_problem})")
        if ramp_kpa_per_s is not None:
            self.set_ramp_rate(ramp_kpa_per_s)
        self._release_preload_kpa = preload_kpa
        self._release_retreating = False
        target = max(preload_kpa, self.settings.contact_threshold_kpa)
        self._retarget(target)
        await self._await_mode_change(ControllerMode.RELEASE)

    async def hold_present(self) -> float | None:
        """Take over a stack that is already loaded (its controller died while holding it; `rig safe --release`):
        hold the force it has now, with no approach and no tare, so nothing moves until asked (e.g. `release()`).
        The pressure is the absolute force over the area. Returns it (kPa), or None with nothing held when the
        press is not in contact. Never moves the press."""
        self._require_running()
        if self._mode is not ControllerMode.IDLE:
            raise self._not_ready("hold the present force")
        held: list[float | None] = []

        async def take_over() -> None:
            f_net = await self._mean_abs_force(self.settings.tare_readings) - self._tare_n
            kpa = 1e3 * self.area_m2
            if f_net <= 1.5 * self.settings.contact_threshold_kpa * kpa:
                held.append(None)
                return
            self._contact_um = self._position_um
            self._mode = ControllerMode.HOLD
            self.law.restart()
            self._frozen.reset()
            self._ramp = SetpointRamp(f_net)  # the reference is the force there is: no move until retargeted
            self._setpoint_kpa = f_net / kpa
            self._last_pressure = f_net / kpa
            held.append(f_net / kpa)

        await self._in_loop(take_over)
        return held[0]

    async def tare(self, *, on_device: bool = False) -> float:
        """Make the present load the pressure zero; the over-force trip keeps its absolute reference.

        `on_device=True` also tares the sensor itself (a Mark-10's `Z` shifts its reading: the shift is measured
        and kept as an offset, so the absolute force stays referenced to the calibration). Returns the tare (N).
        """
        await self._in_loop(lambda: self._do_tare(on_device))
        return self._tare_n

    def acknowledge_overforce(self) -> None:
        """Clear a latched over-force trip (the force must be below the limit now); the controller goes IDLE."""
        if self._mode is not ControllerMode.TRIPPED:
            return
        if self._last_force_abs is None or self._last_force_abs >= self.hard_force_limit_n:
            raise OverForceTripped(
                f"cannot acknowledge: absolute force {self._last_force_abs} N is not known to be below the limit "
                f"{self.hard_force_limit_n} N"
            )
        self._mode = ControllerMode.IDLE
        self._ramp = SetpointRamp(0.0)

    async def wait_settled(
        self, *, tolerance_kpa: float | None = None, hold_s: float = 1.0, timeout_s: float | None = None
    ) -> None:
        """Wait until the ramp is done and the measured pressure stays within tolerance for `hold_s` (experiment).

        An unusable reading (late, frozen, a spike) says nothing about the pressure: it neither ends nor restarts
        the settle time unless the data stay unusable past the stale limit (then the supervisor holds the run
        anyway). Only a usable reading out of tolerance, a ramp or a mode change restarts it, and the settle ends
        on a usable reading in tolerance."""
        deadline = None if timeout_s is None else self._clock.now() + timeout_s
        since: float | None = None
        last_ok: float | None = None
        while True:
            await self.wait_cycles(1)
            self._raise_if_bad()
            now = self._clock.now()
            tol = tolerance_kpa if tolerance_kpa is not None else self._settle_tolerance_kpa()
            p = self._last_pressure
            steady = self._mode is ControllerMode.HOLD and not self._ramp.ramping
            if steady and p is None and last_ok is not None and now - last_ok <= self.stale_limit_s():
                pass  # a short unusable stretch: the settle time runs on, but cannot end on it
            elif steady and p is not None and abs(p - self._setpoint_kpa) <= tol:
                if since is None or last_ok is None or now - last_ok > self.stale_limit_s():
                    since = now  # first, or after a gap in the data longer than the stale limit (no cycle ran)
                last_ok = now
                if now - since >= hold_s:
                    return
            else:
                since = last_ok = None
            if deadline is not None and now > deadline:
                raise TimeoutError(
                    f"pressure did not settle at {self._setpoint_kpa} kPa ± {tol:.3g} within {timeout_s} s "
                    f"(now {p} kPa, mode {self._mode.value})"
                )

    async def wait_cycles(self, n: int = 1) -> None:
        """Wait for `n` more loop cycles."""
        self._require_running()
        target = self._counts["cycles"] + n
        while self._counts["cycles"] < target:
            self._cycle_event.clear()
            task = self._task
            if task is None or task.done():
                raise ControllerFault("pressure controller loop is not running")
            waiter = asyncio.ensure_future(self._cycle_event.wait())
            try:
                await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    def subscribe(self, maxsize: int = 1000) -> asyncio.Queue[ControlSample]:
        """A bounded queue of per-cycle samples; when full the oldest sample is dropped (the loop never blocks)."""
        q: asyncio.Queue[ControlSample] = asyncio.Queue(maxsize=maxsize)
        self._subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[ControlSample]) -> None:
        """Stop publishing to `q`."""
        with contextlib.suppress(ValueError):
            self._subscribers.remove(q)

    # ------------------------------------------------------------------------------------------ status

    @property
    def mode(self) -> ControllerMode:
        """The present mode."""
        return self._mode

    @property
    def pressure_kpa(self) -> float | None:
        """The last usable measured (tared) pressure; None while the sensor is not usable."""
        return self._last_pressure

    @property
    def press_problem(self) -> str | None:
        """Why the press is not usable now (None: verified and answering)."""
        return self._press_problem

    @property
    def moves(self) -> int:
        """Moves commanded so far."""
        return self._counts["moves"]

    def reset_timing_stats(self) -> None:
        """Forget the loop periods measured so far (rate and jitter start again)."""
        self._periods.clear()
        self._t_prev_cycle = None
        self._timing_cache = None

    def status(self) -> ControllerStatus:
        """A snapshot of the controller."""
        kpa = 1e3 * self.area_m2
        rate, p50, jitter99 = self._timing_stats()
        c = self._counts
        return ControllerStatus(
            mode=self._mode,
            setpoint_kpa=self._setpoint_kpa,
            reference_kpa=self._ramp.value_n / kpa,
            pressure_kpa=self._last_pressure,
            force_abs_n=self._last_force_abs,
            tare_n=self._tare_n,
            position_um=self._position_um,
            contact_um=self._contact_um,
            stiffness_n_per_um=self.law.stiffness_n_per_um,
            deadband_kpa=self.law.deadband_n() / kpa,
            noise_n=self.law.noise_n,
            feed_forward=self._feed_forward,
            cell_current_a=self._current_a,
            growth_scale=self.law.disturbance.s,
            drift_um_per_s=self.law.disturbance.c_um_per_s,
            predicted_growth_um=self._predicted_growth_um,
            saturated=self._saturated,
            sensor_ok=self._sensor_ok,
            last_reject=self._last_reject,
            cycles=c["cycles"],
            moves=c["moves"],
            invalid_readings=c["invalid"],
            stale_readings=c["stale"],
            read_errors=c["read_errors"],
            move_errors=c["move_errors"],
            overruns=c["overruns"],
            rate_hz=rate,
            period_p50_ms=p50,
            jitter_p99_ms=jitter99,
            trip=self._trip,
            last_error=self._last_error,
            press_problem=self._press_problem or "",
            press_outages=c["press_outages"],
            press_recoveries=c["press_recoveries"],
        )

    def _timing_stats(self) -> tuple[float, float, float]:
        """(cycles per wall second, median wall period ms, p99 |period − nominal| ms); recomputed every 50 cycles."""
        cycles = self._counts["cycles"]
        if self._timing_cache is not None and cycles - self._timing_cache[0] < 50 and self._periods:
            return self._timing_cache[1]
        speed = self._clock.speed
        nominal_wall = self.settings.period_s / speed
        wall = [p / speed for p in self._periods]
        if wall and sum(wall) > 0:
            jit = sorted(abs(w - nominal_wall) for w in wall)
            stats = (
                len(wall) / sum(wall),
                statistics.median(wall) * 1e3,
                jit[min(len(jit) - 1, math.ceil(0.99 * len(jit)) - 1)] * 1e3,
            )
        else:
            stats = (0.0, 0.0, 0.0)
        self._timing_cache = (cycles, stats)
        return stats

    # ------------------------------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        next_t = self._clock.now()
        while not self._stopping:
            t0 = self._clock.now()
            if self._t_prev_cycle is not None:
                period = t0 - self._t_prev_cycle
                self._periods.append(period)
                self._period_ema_s += 0.05 * (period - self._period_ema_s)
            self._t_prev_cycle = t0
            self._in_cycle = True
            try:
                await self._cycle()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop must not die silently: stop moving and say why
                await self._enter_fault(exc)
            finally:
                self._in_cycle = False
            self._counts["cycles"] += 1
            self._cycle_event.set()
            next_t += self.settings.period_s
            now = self._clock.now()
            if next_t < now:
                self._counts["overruns"] += 1
                next_t = now
            await self._clock.sleep(next_t - now)

    async def _cycle(self) -> None:
        while self._commands:
            action, fut = self._commands.popleft()
            try:
                await action()
            except Exception as exc:
                if not fut.done():
                    fut.set_exception(exc)
            else:
                if not fut.done():
                    fut.set_result(None)
        if self._press_problem is None and _reverify_needed(self._press):
            self._press_lost("its port was re-opened since it was verified")
        if self._position_uncertain and self._press_problem is None:
            try:
                self._position_um = self._snap(await self._press.position_um())
            except DeviceError as exc:
                self._press_lost(f"position read-back failed: {exc}")
            else:
                self._position_uncertain = False
                self.law.restart()
        if _reverify_needed(self._force) and isinstance(self._force, _VerifiableSensor):
            try:  # the load cell's port was re-opened: its settings (tracking off) are checked again first
                await self._force.verify_safe()
            except DeviceError as exc:
                self._counts["read_errors"] += 1
                self._reject(f"re-verify failed: {exc}")
                return
        try:
            reading = await self._read_force()
        except DeviceError as exc:
            self._counts["read_errors"] += 1
            self._reject(f"read failed: {exc}")
            return
        now = self._clock.now()
        usable = self._check(reading, now)
        if not usable:
            if reading.status & (ForceStatus.OVERLOAD | ForceStatus.OVERFLOW):
                await self._saturated_reading(reading)
            return
        assert reading.value_n is not None
        f_abs = reading.force_n() + self._device_offset_n
        f_net = f_abs - self._tare_n
        if why := self._implausible(f_abs, f_net):
            self._counts["stale" if why.startswith("frozen") else "invalid"] += 1
            self._reject(why)
            return
        self._note_fresh(reading.t_s)
        self._last_force_abs = f_abs
        kpa = 1e3 * self.area_m2
        self._last_pressure = f_net / kpa
        dt = 0.0 if self._last_usable_t is None else max(0.0, reading.t_s - self._last_usable_t)
        self._last_usable_t = reading.t_s
        growth = deposit_growth_um(self._current_a, dt, self.area_m2 * 1e4)
        self._predicted_growth_um += growth
        pulses = 0
        if f_abs >= self.hard_force_limit_n and self._mode is not ControllerMode.TRIPPED:
            await self._trip_overforce(f_abs, reading.t_s)
        elif self._press_problem is not None:
            pass  # the press is not answering or not re-verified: no motion until the recovery task is done
        elif self._mode is ControllerMode.APPROACH:
            pulses = await self._approach(f_abs, f_net, reading.t_s)
        elif self._mode in (ControllerMode.HOLD, ControllerMode.RELEASE):
            pulses = await self._hold(f_net, reading.t_s, growth)
        self._publish(reading.t_s, True, "", f_abs, pulses)

    # ------------------------------------------------------------------------------------------ cycle parts

    def sample_period_s(self) -> float:
        """The sample period the loop really achieves (experiment s): a high quantile of the recent intervals
        between fresh usable samples, never below the nominal period nor the host's schedule floor."""
        s = self.settings
        return robust_period_s(
            self._fresh_intervals,
            nominal_s=s.period_s,
            quantile=s.period_quantile,
            floor_s=s.period_floor_wall_s * self._clock.speed,
        )

    def stale_limit_s(self) -> float:
        """No fresh usable sample for this long (experiment s) and the load cell is stale: `stale_periods` periods."""
        return self.settings.stale_periods * self.sample_period_s()

    @property
    def last_fresh_t(self) -> float | None:
        """Reading time of the last fresh usable sample (experiment s)."""
        return self._last_fresh_t

    async def _read_force(self) -> ForceReading:
        """One read. When the stale limit passes while it is on its way, the loop says so at once (an unusable
        sample: no motion, the supervisor suspends) and keeps waiting for the read to finish or fail.

        Only a sensor that is late counts, not a loop or a host that did not ask in time: the read must also have
        been outstanding for a period (it matters only when the loop itself started the read late, e.g. after a
        tare's burst of readings), and the flag goes up only when a wait ends on time (within `_ON_TIME_WALL_S`)
        with the read still unanswered; after a late wake-up (the process was descheduled; in accelerated
        simulation that is many experiment periods) the read gets one more short, on-time wait first. On a
        responsive host neither costs anything."""
        loop = asyncio.get_running_loop()
        asked = self._clock.now()
        read = asyncio.ensure_future(self._force.read())
        try:
            on_time = False  # no wait has yet proved that the loop itself was running
            while not read.done():
                if self._last_fresh_t is None or self._stale_flagged:
                    await asyncio.wait({read})
                    break
                # the flag must be up when the data are `stale_periods` old: the timer fires a little early to
                # cover its own wake-up latency (1 ms of wall time, at most a tenth of a period)
                period = self.sample_period_s()
                early = min(0.1 * period, 0.001 * self._clock.speed)
                due = max(self._last_fresh_t + self.stale_limit_s(), asked + period)
                left = due - early - self._clock.now()
                if left <= 0 and on_time:
                    self._flag_stale()
                    continue
                wait_wall = left / self._clock.speed if left > 0 else _ON_TIME_WALL_S
                t0 = loop.time()
                await asyncio.wait({read}, timeout=wait_wall)
                on_time = loop.time() - t0 <= wait_wall + _ON_TIME_WALL_S
            return read.result()
        finally:
            if not read.done():
                read.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await read

    def _flag_stale(self) -> None:
        assert self._last_fresh_t is not None
        age = self._clock.now() - self._last_fresh_t
        period = self.sample_period_s()
        self._stale_flagged = True
        self._counts["stale"] += 1
        last = f": {self._last_reject}" if self._rejected_since_fresh and self._last_reject else ""
        self._reject(
            f"{STALE_REASON} for {age:.3f} s ({age / period:.2f} actual periods of {period * 1e3:.1f} ms; "
            f"limit {self.settings.stale_periods:g}){last}"
        )

    def _note_fresh(self, t_s: float) -> None:
        """A fresh usable sample: the stale clock restarts; the interval counts as a period unless data were lost."""
        if self._last_fresh_t is not None and not self._rejected_since_fresh:
            self._fresh_intervals.append(max(0.0, t_s - self._last_fresh_t))
        self._last_fresh_t = t_s
        self._stale_flagged = False
        self._rejected_since_fresh = False

    def _implausible(self, f_abs: float, f_net: float) -> str:
        """Spike and frozen checks on a valid, fresh reading; "" when it may be used."""
        s = self.settings
        law = self.law
        jump_limit = s.spike_steps * law.settings.max_step_force_n + 10 * law.noise_n
        if why := self._jumps.check(f_abs, jump_limit):
            return why
        threshold_n = s.contact_threshold_kpa * 1e3 * self.area_m2
        in_contact = self._mode in (ControllerMode.HOLD, ControllerMode.RELEASE) and f_net > threshold_n
        learned = law.stiffness.observations >= 3
        k_low = law.stiffness.value / law.settings.stiffness_safety if learned else law.settings.k_min_n_per_um
        return self._frozen.update(
            force_n=f_abs,
            position_um=self._position_um,  # moves only: creep and growth between moves are not the press's doing
            k_low_n_per_um=k_low,
            noise_n=law.noise_n,
            in_contact=in_contact,
        )

    async def _saturated_reading(self, reading: ForceReading) -> None:
        """Overload / over-range: never motion; an over-force trip when the force could really be there."""
        if self._mode in (ControllerMode.STOPPED, ControllerMode.TRIPPED, ControllerMode.FAULT):
            return
        max_change = 2 * self.law.settings.max_step_force_n
        if saturation_may_be_real(self._last_force_abs, self.hard_force_limit_n, max_change):
            shown = reading.value_n + self._device_offset_n if reading.value_n is not None else self.hard_force_limit_n
            await self._trip_overforce(
                shown, self._clock.now(), cause=f"load cell saturated ({reading.status!r}, raw {reading.raw!r})"
            )

    def _check(self, reading: ForceReading, now: float) -> bool:
        """Freshness rules; unusable readings are counted, published and produce no motion."""
        if reading.valid and reading.value_n == self._last_value:
            self._identical += 1
        else:
            self._identical = 0
        self._last_value = reading.value_n if reading.valid else None
        last_period = self._periods[-1] if self._periods else 0.0
        max_age = self.settings.stale_periods * max(self.settings.period_s, self._period_ema_s, last_period)
        verdict = classify_reading(
            valid=reading.valid,
            seq=reading.seq,
            t_s=reading.t_s,
            now_s=now,
            last_seq=self._last_seq,
            max_age_s=max_age,
            identical_count=self._identical,
            frozen_after=self.settings.frozen_after_reads,
        )
        if self._last_seq is None or reading.seq > self._last_seq:
            self._last_seq = reading.seq
        if verdict.usable:
            self._sensor_ok = True
            return True
        self._counts["invalid" if verdict.reason == "invalid" else "stale"] += 1
        self._reject(verdict.reason if verdict.reason != "invalid" else f"invalid: {reading.status!r}")
        return False

    def _reject(self, reason: str) -> None:
        self._sensor_ok = False
        self._rejected_since_fresh = True
        self._last_reject = reason
        self._last_pressure = None
        self.law.restart()
        self._publish(self._clock.now(), False, reason, None, 0)
        last = self._last_fresh_t
        # readings come, but none usable (invalid, frozen, spikes, read errors): stale once the data are old. A
        # reading the sensor answered in time but the loop used late ("… s old") is the host's doing, not the
        # sensor's: the next one will be fresh.
        late_use = " old (limit " in reason
        if self._stale_flagged or late_use or last is None:
            return
        if self._clock.now() - last >= self.stale_limit_s():
            self._flag_stale()

    async def _approach(self, f_abs: float, f_net: float, t_s: float) -> int:
        s = self.settings
        kpa = 1e3 * self.area_m2
        threshold_n = s.contact_threshold_kpa * kpa
        if not self._approach_started:
            self._approach_started = True
            if f_net > threshold_n:
                return self._contact(f_net, t_s)  # already in contact: no approach (and no tare) needed
            if self._approach_tare:
                self._tare_n = await self._mean_abs_force(s.tare_readings)
                self._tared = True
            return 0
        self.law.observe(t_s=t_s, force_n=f_net, position_um=self._position_um)
        if f_net > threshold_n:
            self._contact_count += 1
            if self._contact_count >= s.contact_confirm_readings:
                return self._contact(f_net, t_s)
            return 0
        self._contact_count = 0
        step = s.approach_step_um
        if step is None:  # the force overshoot at contact stays below half the lowest setpoint, even at k_max
            step = max(threshold_n, 0.5 * self.min_pressure_kpa * kpa) / s.k_max_n_per_um
        step = max(self._p, step)
        target = self._snap(self._position_um + step)
        if target > self._approach_limit_um + 1e-9:
            start = self._approach_start_um if self._approach_start_um is not None else self._position_um
            travelled = self._position_um - start
            detail = (
                f"no contact within the allowed travel: moved {travelled:.1f} µm (from {start:.1f} to "
                f"{self._position_um:.1f} µm, limit {self._approach_limit_um:.1f} µm) and the force stayed at "
                f"{f_net:.3f} N, below the contact threshold {threshold_n:.3f} N ({s.contact_threshold_kpa} kPa); "
                "the press went back to where it started"
            )
            await self._move_to(start)
            self._mode = ControllerMode.IDLE
            self._fail_pending(ApproachError(detail))
            return 0
        pulses = await self._move_to(target)
        self.law.note_external_move(pulses)
        return pulses

    def _contact(self, f_net: float, t_s: float) -> int:
        self._contact_um = self._position_um
        self._mode = ControllerMode.HOLD
        self.law.restart()
        self._frozen.reset()
        kpa = 1e3 * self.area_m2
        self._ramp = SetpointRamp(f_net)
        self._ramp.set_target(self._setpoint_kpa * kpa, self._ramp_rate_kpa_per_s * kpa, t_s=t_s, start_n=f_net)
        self._resolve_pending()
        return 0

    async def _hold(self, f_net: float, t_s: float, growth_um: float) -> int:
        s = self.settings
        kpa = 1e3 * self.area_m2
        if self._mode is ControllerMode.RELEASE and self._release_retreating:
            return 0
        ref = self._ramp.advance(t_s)
        lower, upper = self.travel_um
        max_step = s.step_travel_fraction * self._speed_um_per_s * max(s.period_s, self._period_ema_s)
        move: Move = self.law.step(
            t_s=t_s,
            force_n=f_net,
            reference_n=ref,
            position_um=self._position_um,
            lower_um=lower,
            upper_um=upper,
            feed_forward=self._feed_forward,
            growth_um=growth_um,
            max_step_um=max_step,
        )
        self._saturated = move.saturated
        if move.saturated:
            self._ramp.hold_back(f_net, move.deadband_n)  # the reference cannot wind up either
        pulses = 0
        if move.pulses:
            pulses = await self._move_to(move.target_um)
            if pulses == 0:
                self.law.move_not_sent()
        if self._mode is ControllerMode.RELEASE and not self._ramp.ramping:
            target_kpa = max(self._release_preload_kpa, s.contact_threshold_kpa)
            if self._release_preload_kpa > 0:
                if abs(f_net / kpa - target_kpa) <= max(self._settle_tolerance_kpa(), move.deadband_n / kpa):
                    self._setpoint_kpa = self._release_preload_kpa
                    self._mode = ControllerMode.HOLD
                    self._resolve_pending()
            elif f_net <= s.contact_threshold_kpa * kpa * 1.5:
                self._release_retreating = True
                back = self._approach_start_um
                if back is None or back >= self._position_um:
                    back = self._position_um - s.retreat_um
                await self._move_to(max(self.travel_um[0], back))
                self._mode = ControllerMode.IDLE
                self._setpoint_kpa = 0.0
                self._resolve_pending()
        return pulses

    async def _trip_overforce(self, f_abs: float, t_s: float, cause: str = "") -> None:
        s = self.settings
        self._mode = ControllerMode.TRIPPED
        self._frozen.reset()
        self._jumps.reset()
        here = self._position_um
        retreated: float | None = None
        detail = cause
        try:
            await self._press.emergency_stop()
            here = self._snap(await self._press.position_um())
            self._position_um = here
            if self._contact_um is not None and self._contact_um - s.retreat_margin_um < here:
                target = self._contact_um - s.retreat_margin_um
            else:
                target = here - s.retreat_um
            target = self._snap(max(self.travel_um[0], target))
            await self._press.move_absolute_um(target)
            self._position_um = target
            self._counts["moves"] += 1
            retreated = target
        except (DeviceError, ValueError, RuntimeError) as exc:
            self._position_uncertain = True
            detail = f"{cause}; retreat failed: {exc}" if cause else f"retreat failed: {exc}"
            self._last_error = detail
        self._trip = OverForceTrip(
            t_s=t_s,
            force_n=f_abs,
            limit_n=self.hard_force_limit_n,
            position_um=here,
            retreated_to_um=retreated,
            detail=detail,
        )
        self._fail_pending(
            OverForceTripped(
                f"over-force: absolute force {f_abs:.2f} N reached the limit {self.hard_force_limit_n:.2f} N "
                f"(rig.hard_force_limit_n){f' ({cause})' if cause else ''}; press stopped and retreated to "
                f"{retreated} µm; latched until acknowledged"
            )
        )

    async def _move_to(self, target_um: float) -> int:
        """One absolute move, clipped to the travel limits; returns the pulses moved (0 if it failed)."""
        lower, upper = self.travel_um
        p = self._p
        lo, hi = math.ceil(lower / p - 1e-9), math.floor(upper / p + 1e-9)
        target = min(max(round(target_um / p), lo), hi)
        here = round(self._position_um / p)
        if target == here:
            return 0
        try:
            await self._press.move_absolute_um(target * p)
        except DeviceError as exc:
            self._counts["move_errors"] += 1
            self._position_uncertain = True  # it may or may not have started: read it back, never re-send it
            self._last_error = f"move failed: {exc}"
            self._press_lost(f"move failed: {exc}")
            return 0
        self._position_um = target * p
        self._counts["moves"] += 1
        return target - here

    def _press_lost(self, why: str) -> None:
        """The press did not answer (after the bus's bounded retries): no motion; recover it in the background."""
        self._last_error = f"press: {why}"
        if self._press_problem is None:
            self._counts["press_outages"] += 1
        self._press_problem = why
        self._position_uncertain = True
        self.law.restart()
        if self._press_task is None or self._press_task.done():
            self._press_task = asyncio.get_running_loop().create_task(self._recover_press(), name="press-recovery")

    async def _recover_press(self) -> None:
        """Until it works: reconnect, stop, set and read back the travel limits, check alarms, motion limits,
        read the position back; only then may the loop move the press again."""
        lower, upper = self.travel_um
        velocity, accel, decel = self._motion
        while not self._stopping:
            try:
                await self._press.connect()
                await self._press.stop()  # whatever was under way ends: the position read below is where it stays
                await self._press.set_travel_limits_um(lower, upper)
                await self._press.enable()  # alarms are reported (DeviceAlarm), never reset here
                await self._press.set_motion_limits(
                    velocity_rpm=velocity, accel_ms_per_krpm=accel, decel_ms_per_krpm=decel
                )
                position = self._snap(await self._press.position_um())
                if _reverify_needed(self._press):
                    raise DeviceError(self._press.name, "re-verify", "the port was re-opened during the check")
            except Exception as exc:  # DeviceError, or anything unexpected: keep it still and try again
                self._press_problem = f"not answering or not verified: {type(exc).__name__}: {exc}"
                self._last_error = f"press: {self._press_problem}"
                await self._clock.sleep(max(self.settings.press_retry_s, 0.05 * self._clock.speed))
                continue
            self._position_um = position
            self._position_uncertain = False
            self.law.restart()
            self._press_problem = None
            self._counts["press_recoveries"] += 1
            return

    async def _do_tare(self, on_device: bool) -> None:
        before = await self._mean_abs_force(self.settings.tare_readings)
        if on_device:
            await self._force.tare()
            after = await self._mean_abs_force(self.settings.tare_readings)
            self._device_offset_n += before - after
        self._tare_n = before
        self._tared = True
        if self._mode in (ControllerMode.HOLD, ControllerMode.RELEASE):
            self._retarget(self._setpoint_kpa, start_n=(self._last_force_abs or before) - before)
        self.law.restart()

    async def _mean_abs_force(self, n: int) -> float:
        """Mean absolute force over `n` valid readings (at most 3n tries). Each valid reading is published (reason
        "tare"): a burst of ten Modbus reads outlasts the supervisor's 0.1 s silence backstop at 1x, and every run
        began with a stale-load-cell hold and a safe-state alarm while the load cell answered throughout."""
        values: list[float] = []
        for _ in range(3 * n):
            try:
                reading = await self._force.read()
            except DeviceError:
                continue
            if reading.valid:
                values.append(reading.force_n() + self._device_offset_n)
                self._last_seq = max(self._last_seq or 0, reading.seq)
                self._last_fresh_t = reading.t_s  # fresh data for the stale clock (not a loop period)
                self._stale_flagged = False
                self._publish(reading.t_s, True, "tare", values[-1], 0)
                if len(values) >= n:
                    return statistics.fmean(values)
        raise ControllerFault(f"could not get {n} valid force readings for a tare (got {len(values)})")

    # ------------------------------------------------------------------------------------------ helpers

    def _retarget(self, target_kpa: float, *, start_n: float | None = None) -> None:
        kpa = 1e3 * self.area_m2
        now = self._clock.now()
        if start_n is None:
            measured = self._last_pressure
            # bumpless: start from the reference unless the process is elsewhere (e.g. after saturation)
            if measured is not None and abs(measured * kpa - self._ramp.value_n) > 2 * self.law.deadband_n():
                start_n = measured * kpa
        self._ramp.set_target(target_kpa * kpa, self._ramp_rate_kpa_per_s * kpa, t_s=now, start_n=start_n)

    def _settle_tolerance_kpa(self) -> float:
        s = self.settings
        if s.settle_tolerance_kpa is not None:
            return s.settle_tolerance_kpa
        return max(0.01 * self._setpoint_kpa, 1.2 * self.law.deadband_n() / (1e3 * self.area_m2))

    def _check_setpoint(self, setpoint_kpa: float) -> None:
        if not (math.isfinite(setpoint_kpa) and self.min_pressure_kpa <= setpoint_kpa <= self.max_pressure_kpa):
            raise ValueError(
                f"setpoint {setpoint_kpa} kPa is outside the rig's range {self.min_pressure_kpa}–"
                f"{self.max_pressure_kpa} kPa (rig.min_pressure_kpa / rig.max_pressure_kpa)"
            )

    def _snap(self, um: float) -> float:
        return round(um / self._p) * self._p

    def _require_running(self) -> None:
        if self._task is None or self._task.done():
            raise RuntimeError("pressure controller is not running; call start() first")

    def _not_ready(self, what: str) -> Exception:
        if self._mode is ControllerMode.TRIPPED:
            return OverForceTripped(f"cannot {what}: over-force trip is latched; acknowledge_overforce() first")
        if self._mode is ControllerMode.FAULT:
            return ControllerFault(f"cannot {what}: controller fault: {self._last_error}")
        return RuntimeError(f"cannot {what} in mode {self._mode.value}")

    def _raise_if_bad(self) -> None:
        if self._mode is ControllerMode.TRIPPED:
            raise OverForceTripped(f"over-force trip latched: {self._trip}")
        if self._mode is ControllerMode.FAULT:
            raise ControllerFault(self._last_error)

    async def _await_mode_change(self, mode: ControllerMode) -> None:
        self._fail_pending(ControllerFault(f"superseded by {mode.value}"))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending = fut
        self._mode = mode
        await fut

    def _resolve_pending(self) -> None:
        fut, self._pending = self._pending, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _fail_pending(self, exc: Exception) -> None:
        fut, self._pending = self._pending, None
        if fut is not None and not fut.done():
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: a caller that went away must not log "never retrieved"

    def _fail_commands(self, exc: Exception) -> None:
        while self._commands:
            _, cmd = self._commands.popleft()
            if not cmd.done():
                cmd.set_exception(exc)
                cmd.exception()

    async def _in_loop(self, action: Callable[[], Awaitable[None]]) -> None:
        self._require_running()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commands.append((action, fut))
        await fut

    async def _enter_fault(self, exc: Exception) -> None:
        self._mode = ControllerMode.FAULT
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._fail_pending(ControllerFault(self._last_error))
        self._fail_commands(ControllerFault(self._last_error))
        with contextlib.suppress(Exception):
            await self._press.stop()
        self._position_uncertain = True

    def _publish(self, t_s: float, usable: bool, reason: str, f_abs: float | None, pulses: int) -> None:
        if not self._subscribers:
            return
        kpa = 1e3 * self.area_m2
        sample = ControlSample(
            t_s=t_s,
            mode=self._mode,
            usable=usable,
            reason=reason,
            pressure_kpa=self._last_pressure if usable else None,
            force_abs_n=f_abs,
            reference_kpa=self._ramp.value_n / kpa,
            setpoint_kpa=self._setpoint_kpa,
            position_um=self._position_um,
            pulses=pulses,
            press_ok=self._press_problem is None,
        )
        for q in self._subscribers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
                self.dropped_samples += 1
            q.put_nowait(sample)
