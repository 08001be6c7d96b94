"""The run engine: executes a validated plan while the pressure controller holds the stack underneath.

States: idle → running ⇄ paused | suspended → completed | aborted | failed; every change is recorded as an event.
A pause is the operator's; a suspension is the supervisor's (rig.run.supervisor: a stale load cell, pressure out of
band, event-loop lag, a storage error, a potentiostat that does not answer or sits in compliance, an over-force
trip). Both enter the one safe state (rig.run.safe_state) and resume with the same pressure-first rule; a suspension
clears by itself, then the step continues by its `on_resume` policy (continue, restart, or abort). Step progress
is written to the store with every sample so a killed run can be continued (`ResumePoint`). The engine
is the only owner of the potentiostat; the pressure controller is the only owner of the press. Capacity is counted
from the measured current on the experiment clock (trapezoids between readings). A plate ends at its capacity or
time (or at its voltage safeguard); a strip ends at its cut-off (or its capacity safeguard). Pausing switches the
current off (output-off state HIMP, verified at start) and keeps the pressure; resuming waits until the pressure
is back in band for the settle time before any current flows again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from drivers.errors import DeviceError
from drivers.interfaces import GalvanostaticConfig, Potentiostat, PotentiostatReading
from protocols.plan import Plan, PlannedHold, PlannedPlate, PlannedPressure, PlannedRest, PlannedStep, PlannedStrip
from rig.clock import unix_now
from rig.control.controller import ControllerMode, OverForceTripped, PressureController
from rig.control.release import ReleaseAbandoned, release_bounded
from rig.data.coulombic import CoulombicLedger
from rig.data.porosity import LiveDepositEstimator
from rig.data.store import FLAG_ENDED, FLAG_PAUSED, FLAG_RESUMED, FLAG_STALE, FLAG_SUSPENDED, RunStore, Sample
from rig.run.safe_state import SafeState
from rig.run.supervisor import Supervisor, SupervisorSettings


class RunState(enum.Enum):
    """The run's state."""

    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"


class RunAborted(Exception):
    """The operator (or a signal) aborted the run."""


class _RestartStep(Exception):
    """The step restarts after a suspension (its on_resume policy is restart)."""


@dataclass(frozen=True)
class ResumePoint:
    """Where a killed run continues: rebuilt from the store and the hardware readback."""

    step_i: int
    charge_c: float  # step charge at the last stored sample
    time_in_step_s: float
    extra_charge_c: float = 0.0  # passed while no controller was running (hardware readback)
    ledger: tuple[tuple[int, str, float], ...] = ()  # (cycle, "plate"|"strip", charge) of the finished steps
    resumes: int = 1


class EngineClock(Protocol):
    """The experiment clock."""

    speed: float

    def now(self) -> float:
        """Experiment seconds."""
        ...

    async def sleep(self, experiment_s: float) -> None:
        """Sleep in experiment time."""
        ...


class SafePotentiostat(Potentiostat, Protocol):
    """A potentiostat that can verify its safety settings."""

    async def verify_safe(self, voltage_limit_v: float) -> Any:
        """Set and read back HIMP output-off and the compliance; raise when unsafe."""
        ...


@dataclass
class Progress:
    """What the display shows."""

    state: RunState
    step_number: int
    step_total: int
    step_kind: str
    step_label: str
    cycle: int
    elapsed_s: float
    remaining_s: float
    pressure_kpa: float | None
    setpoint_kpa: float
    voltage_v: float | None
    current_a: float | None
    step_charge_c: float
    output_on: bool = False
    reason: str = ""  # why the run is paused, suspended, or ended (the holds' messages, the abort's reason)
    phase: str = ""  # what happens outside the steps: "releasing pressure" after the protocol


@dataclass
class RunResult:
    """How a run ended."""

    state: RunState
    ledger: CoulombicLedger
    steps_done: int
    reason: str = ""
    ocv_v: dict[int, float] = field(default_factory=dict)
    left_undone: list[str] = field(default_factory=list)  # e.g. "pressure not released: press not answering"

    @property
    def ice(self) -> float | None:
        """First-cycle coulombic efficiency."""
        return self.ledger.ice

    @property
    def average_ce(self) -> float | None:
        """Average CE over complete cycles."""
        return self.ledger.average_ce


class RunEngine:
    """Runs one plan; see the module docstring."""

    def __init__(
        self,
        *,
        plan: Plan,
        potentiostat: SafePotentiostat,
        controller: PressureController,
        clock: EngineClock,
        voltage_compliance_v: float,
        store: RunStore | None = None,
        sample_period_s: float = 1.0,
        release_preload_kpa: float = 0.0,
        settle_after_resume_s: float = 60.0,
        resume_tolerance_frac: float = 0.05,
        on_progress: Callable[[Progress], None] | None = None,
        read_retries: int = 3,
        supervisor: SupervisorSettings | None = None,
        resume_from: ResumePoint | None = None,
        on_event: Callable[[str, str, dict[str, Any]], None] | None = None,
        max_compliance_suspends: int = 3,
    ) -> None:
        self.plan = plan
        self._pot = potentiostat
        self._ctl = controller
        self._clock = clock
        self._vlim = voltage_compliance_v
        self._store = store
        self._sample_period_s = sample_period_s
        self._release_preload_kpa = release_preload_kpa
        self._settle_after_resume_s = settle_after_resume_s
        self._resume_tol = resume_tolerance_frac
        self._on_progress = on_progress
        self._read_retries = read_retries
        self.state = RunState.IDLE
        self.ledger = CoulombicLedger()
        self._resume = asyncio.Event()
        self._resume.set()
        self._abort_reason: str | None = None
        self._step_i = 0 if resume_from is None else resume_from.step_i  # shown as it is from the start
        self._step_charge_c = 0.0
        self._time_in_step_s = 0.0
        self._acc_t: float | None = None
        self._acc_i = 0.0
        self._last_v: float | None = None
        self._last_i: float | None = None
        self._output_on = False
        self._step_started_t = 0.0
        # the plan's estimate of the steps after each one (what `remaining` adds to the present step's rest)
        later = [s.estimated_duration_s for s in plan.steps]
        self._later_s = [math.fsum(later[i + 1 :]) for i in range(len(later))]
        self._phase = ""
        self._end_reason = ""
        self._left_undone: list[str] = []
        self.ocv_v: dict[int, float] = {}
        # operando deposit thickness (issue 7): net deposited charge = ledger + the running step's, signed
        self._deposit = LiveDepositEstimator(area_cm2=plan.electrode_area_m2 * 1e4)
        self._electro_sign = 0  # +1 while a plate step counts charge, -1 while a strip does
        self._holds: dict[str, tuple[str, float]] = {}  # key -> (message, since)
        self._safe = SafeState(current_off=self._current_off, event=self._event)
        self._sup_settings = supervisor or SupervisorSettings()
        self.supervisor: Supervisor | None = None
        self._resume_from = resume_from
        self._on_event = on_event
        self._flag_resumed = resume_from is not None
        self._suspended_in_step = False
        self._compliance_suspends = 0
        self._max_compliance_suspends = max_compliance_suspends
        self._bg: set[asyncio.Task[Any]] = set()
        self._ack = asyncio.Event()
        self.suspensions = 0
        self._preload: tuple[float, float] | None = None
        self.watch_pressure = False
        self._stray: tuple[float, float] | None = None  # (since, current) when an output-off was not confirmed
        self._off_lock = asyncio.Lock()

    # ------------------------------------------------------------------ operator commands
    async def pause(self) -> dict[str, Any]:
        """Pause: current off, pressure held."""
        if self.state in (RunState.RUNNING, RunState.SUSPENDED) and "operator" not in self._holds:
            self._add_hold("operator", "operator pause")
            await self._safe.enter("operator", "operator pause", kind="operator")
        return {"state": self.state.value}

    async def resume(self) -> dict[str, Any]:
        """Resume after a pause (current returns only once the pressure is back in band)."""
        if "operator" in self._holds:
            self._drop_hold("operator", "operator resume")
        return {"state": self.state.value}

    async def abort(self, reason: str = "operator abort") -> dict[str, Any]:
        """Abort: current off at once; the run ends in the safe state."""
        if self.state in (RunState.RUNNING, RunState.PAUSED, RunState.SUSPENDED, RunState.IDLE):
            if self._abort_reason is None:
                self._abort_reason = reason
            self._resume.set()
            await self._safe.enter("abort", reason)
            self._ack.set()  # a latched over-force trip waits for `ack` or an abort
            # the run is over from here: say so at once, everywhere (unless the step loop, which stops at its next
            # look, has said so already while the output was being switched off)
            if self.state in (RunState.RUNNING, RunState.PAUSED, RunState.SUSPENDED, RunState.IDLE):
                self._set_state(RunState.ABORTED, self._abort_reason)
            self._show()
        return {"state": self.state.value, "output_on": self._output_on, "reason": self._abort_reason or ""}

    async def ack(self) -> dict[str, Any]:
        """Acknowledge a latched over-force trip: the controller unlatches and the run ends (aborted)."""
        if self._ctl.mode is not ControllerMode.TRIPPED:
            return {"state": self.state.value, "acknowledged": False, "detail": "no over-force trip is latched"}
        self._ctl.acknowledge_overforce()  # raises while the force is still above the limit
        self._safe.clear("overforce")
        self._event("operator", "over-force trip acknowledged")
        if self._abort_reason is None:
            self._abort_reason = "over-force trip (acknowledged by the operator)"
        self._ack.set()
        self._holds.pop("overforce", None)
        self._resume.set()
        return {"state": self.state.value, "acknowledged": True}

    # ------------------------------------------------------------------ suspender interface (rig.run.supervisor)
    def suspend(self, key: str, message: str, **data: object) -> None:
        """Add a hold: the protocol suspends (current off at once, pressure held)."""
        if key in self._holds or self.state not in (RunState.RUNNING, RunState.PAUSED, RunState.SUSPENDED):
            return
        self.suspensions += 1
        self._add_hold(key, message)
        self._spawn(self._safe.enter(key, message, data=dict(data)))

    def clear_hold(self, key: str) -> None:
        """Remove a hold; with none left the run resumes (pressure first, then current)."""
        if key in self._holds:
            self._safe.clear(key)
            self._drop_hold(key, f"{key} cleared")

    def hold_ages(self) -> dict[str, float]:
        """How long each present hold has lasted (experiment seconds)."""
        now = self._clock.now()
        return {k: now - since for k, (_, since) in self._holds.items()}

    def escalate(self, reason: str) -> None:
        """Abort the run from the supervisor."""
        if self._abort_reason is None:
            self._event("alarm", f"escalated to abort: {reason}")
            self._spawn(self.abort(reason))

    def overforce(self, detail: str) -> None:
        """The controller tripped (it stopped and retreated); latch until `ack`."""
        self.suspend("overforce", f"over-force trip, latched until acknowledged: {detail}")

    def _spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    def _add_hold(self, key: str, message: str) -> None:
        self._holds[key] = (message, self._clock.now())
        self._resume.clear()
        if key != "operator":
            self._suspended_in_step = True
        self._update_state(message)

    def _drop_hold(self, key: str, why: str) -> None:
        self._holds.pop(key, None)
        self._update_state(why)
        if not self._holds:
            self._resume.set()

    def _update_state(self, why: str) -> None:
        if self.state not in (RunState.RUNNING, RunState.PAUSED, RunState.SUSPENDED):
            return
        if "operator" in self._holds:
            new = RunState.PAUSED
        elif self._holds:
            new = RunState.SUSPENDED
        else:
            new = RunState.RUNNING
        if new is not self.state:
            self._set_state(new, why)
            if new is RunState.RUNNING:
                self._flag_resumed = True

    def record_event(self, kind: str, message: str, **data: Any) -> None:
        """Record an event from outside the engine (run setup, crash-resume readback)."""
        self._event(kind, message, **data)

    def add_resume_charge(self, charge_c: float) -> None:
        """Charge that passed while no controller ran (found by the hardware readback before a crash resume)."""
        if self._resume_from is not None:
            self._resume_from = dataclasses.replace(
                self._resume_from, extra_charge_c=self._resume_from.extra_charge_c + charge_c
            )

    def storage_error(self, why: str) -> None:
        """RunStore on_error: the run suspends (the control loop never waits on storage)."""
        self.suspend("storage", f"storage error: {why}")

    def storage_recovered(self) -> None:
        """RunStore on_recover."""
        self.clear_hold("storage")

    async def status(self) -> dict[str, Any]:
        """A snapshot for `rig status`."""
        p = self.progress()
        return {
            "state": p.state.value,
            "reason": p.reason,
            "phase": p.phase,
            "holds": {k: m for k, (m, _) in self._holds.items()},
            "step": f"{p.step_number}/{p.step_total} {p.step_kind} {p.step_label}".strip(),
            "pressure_kpa": p.pressure_kpa,
            "setpoint_kpa": p.setpoint_kpa,
            "output_on": p.output_on,
            "current_a": p.current_a,
            "voltage_v": p.voltage_v,  # measured with the output on; None while it is off (paused, suspended)
            "step_charge_mah": p.step_charge_c / 3.6,
            "elapsed_s": p.elapsed_s,
            "remaining_s": p.remaining_s,
            "ice": self.ledger.ice,
        }

    # ------------------------------------------------------------------ the run
    async def run(self) -> RunResult:
        """Execute every step; always ends with the current off and the pressure held or released."""
        steps_done = 0
        reason = ""
        rp = self._resume_from
        first = rp.step_i if rp is not None else 0
        self._step_started_t = self._clock.now()
        self.supervisor = Supervisor(engine=self, controller=self._ctl, clock=self._clock, settings=self._sup_settings)
        try:
            await self._pot.connect()
            await self._pot.verify_safe(self._vlim)
            await self.supervisor.start()
            if self._abort_reason is not None:  # aborted (a signal) while the rig was being set up
                raise RunAborted(self._abort_reason)
            self._set_state(RunState.RUNNING, "run resumed" if rp is not None else "run started")
            if rp is not None:
                for cycle, kind, charge in rp.ledger:
                    self.ledger.add(cycle, kind, charge)
                steps_done = first
            if first < len(self.plan.steps):
                first_kpa = self.plan.steps[first].pressure_pa / 1e3
                self._event("pressure", f"engaging at {first_kpa:g} kPa")
                self._phase = "approaching the stack"
                try:  # recorded and shown as it goes: the approach can take many minutes
                    await self._recording(self._ctl.engage(first_kpa))
                finally:
                    self._phase = ""
            if rp is not None and first < len(self.plan.steps):
                await self._prepare_resume(self.plan.steps[first], rp)
            for i in range(first, len(self.plan.steps)):
                step = self.plan.steps[i]
                self._step_i = i
                self._step_started_t = self._clock.now()
                self._event("step", f"step {step.number} {step.kind} {step.label}".strip(), step=i)
                while True:
                    self._suspended_in_step = False
                    self._compliance_suspends = 0
                    try:
                        await self._checkpoint()
                        await self._run_step(step)
                        break
                    except _RestartStep:
                        self._event("resume", f"step {step.number} restarts (on_resume: restart)", step=i)
                steps_done += 1
            self._set_state(RunState.COMPLETED, "all steps done")
        except OverForceTripped as exc:
            await self._safe.enter("overforce", f"over-force trip, latched until acknowledged: {exc}")
            self._add_hold("overforce", "over-force trip, latched until acknowledged")
            await self._ack.wait()  # `rig ack`, or an abort
            reason = self._abort_reason or "over-force trip"
            self._end(RunState.ABORTED, reason)
        except RunAborted as exc:
            reason = self._abort_reason or str(exc)
            self._end(RunState.ABORTED, reason)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._end(RunState.FAILED, reason)
        finally:
            await self._current_off()
            self._show()
            if self.supervisor is not None:
                await self.supervisor.stop()
            for t in list(self._bg):
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await t
            await self._end_pressure()
            summary = {
                "ice": self.ledger.ice,
                "average_ce": self.ledger.average_ce,
                "cycles": self.ledger.efficiencies(),
            }
            self._event("summary", "coulombic efficiency", **summary)
        return RunResult(self.state, self.ledger, steps_done, reason, self.ocv_v, list(self._left_undone))

    def _end(self, state: RunState, reason: str) -> None:
        """The run's final state (an abort may have set it already, at the moment it arrived)."""
        self._end_reason = reason
        if self.state is not state:
            self._set_state(state, reason)

    def _show(self) -> None:
        """Refresh the display now (a state change outside the sampling, e.g. an abort)."""
        if self._on_progress is not None:
            self._on_progress(self.progress())

    async def _end_pressure(self) -> None:
        """Release the pressure, recording as it goes (rig.control.release: bounded; a press or load cell that stops
        answering ends it with the pressure held where it is, said once, recorded, and reported in the result)."""
        if self._ctl.mode not in (ControllerMode.HOLD, ControllerMode.RELEASE):
            return
        self._phase = "releasing pressure"
        self._show()
        try:
            await release_bounded(
                self._ctl,
                clock=self._clock,
                preload_kpa=self._release_preload_kpa,
                tick=lambda: self._record(ended=True),
                tick_s=self._sample_period_s,
            )
            self._event("pressure", f"released to {self._release_preload_kpa:g} kPa")
        except Exception as exc:  # the controller keeps holding where it is, if it can
            why = str(exc) if isinstance(exc, ReleaseAbandoned) else f"{type(exc).__name__}: {exc}"
            self._left_undone.append(f"pressure not released: {why}")
            self._event("alarm", f"pressure not released, held where it is: {why}")
        finally:
            self._phase = ""
            self._show()

    async def _prepare_resume(self, step: PlannedStep, rp: ResumePoint) -> None:
        """Continue a killed run: pressure re-established first, then the step by its on_resume policy."""
        policy = step.on_resume
        self._event(
            "resume",
            f"crash resume #{rp.resumes} at step {step.number} {step.kind} (on_resume: {policy})",
            step=rp.step_i,
            charge_c=rp.charge_c,
            extra_charge_c=rp.extra_charge_c,
            time_in_step_s=rp.time_in_step_s,
        )
        if policy == "abort":
            raise RunAborted(f"step {step.number} ({step.kind}) cannot be resumed (on_resume: abort)")
        kpa = step.pressure_pa / 1e3
        tol = max(self._resume_tol * kpa, 0.5)
        self._event("resume", f"re-establishing {kpa:g} kPa ± {tol:.2g} for {self._settle_after_resume_s:g} s")
        self._ctl.set_setpoint(kpa)
        await self._wait_in_band(kpa, tolerance_kpa=tol, hold_s=self._settle_after_resume_s)
        if policy == "continue" and isinstance(step, PlannedPlate | PlannedStrip):
            self._preload = (rp.charge_c + rp.extra_charge_c, rp.time_in_step_s)

    async def _run_step(self, step: PlannedStep) -> None:
        self.watch_pressure = False
        await self._ensure_pressure(step)
        self.watch_pressure = isinstance(step, PlannedPlate | PlannedStrip | PlannedRest)
        if isinstance(step, PlannedPressure):
            await self._pressure_step(step)
        elif isinstance(step, PlannedRest):
            await self._rest_step(step)
        elif isinstance(step, PlannedHold):
            await self._wait_step(step.duration_s)
        elif isinstance(step, PlannedPlate | PlannedStrip):
            await self._galvanostatic_step(step)
        else:  # pragma: no cover - the plan has no other kinds
            raise TypeError(f"unknown step {step!r}")

    async def _ensure_pressure(self, step: PlannedStep) -> None:
        kpa = step.pressure_pa / 1e3
        if isinstance(step, PlannedPressure):
            return
        if abs(self._ctl.status().setpoint_kpa - kpa) > 1e-9:
            self._event("pressure", f"setpoint {kpa:g} kPa for step {step.number}")
            self._ctl.set_setpoint(kpa)
            await self._wait_in_band(kpa, tolerance_kpa=None, hold_s=10.0)

    async def _pressure_step(self, step: PlannedPressure) -> None:
        kpa = step.pressure_pa / 1e3
        ramp = step.ramp_rate_pa_s / 1e3 if step.ramp_rate_pa_s else None
        self._ctl.set_setpoint(kpa, ramp_kpa_per_s=ramp)
        await self._wait_in_band(
            kpa, tolerance_kpa=step.tolerance_pa / 1e3, hold_s=step.settle_s, timeout_s=step.timeout_s
        )

    async def _wait_in_band(
        self, kpa: float, *, tolerance_kpa: float | None, hold_s: float, timeout_s: float | None = None
    ) -> None:
        await self._recording(self._ctl.wait_settled(tolerance_kpa=tolerance_kpa, hold_s=hold_s, timeout_s=timeout_s))

    async def _recording(self, work: Coroutine[Any, Any, None]) -> None:
        """Await `work` while recording a sample every sample period; an abort ends it."""
        waiter = asyncio.ensure_future(work)
        try:
            while not waiter.done():
                await asyncio.wait({waiter}, timeout=self._clock_wall(self._sample_period_s))
                self._record()
                if self._abort_reason is not None:
                    raise RunAborted(self._abort_reason)
            waiter.result()
        finally:
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await waiter

    async def _wait_step(self, duration_s: float) -> None:
        done = 0.0
        while done < duration_s:
            await self._checkpoint()
            dt = min(self._sample_period_s, duration_s - done)
            t0 = self._clock.now()
            await self._clock.sleep(dt)
            if self.state is RunState.RUNNING:
                done += self._clock.now() - t0
            self._record()

    async def _rest_step(self, step: PlannedRest) -> None:
        """Open circuit: 0 A with the output on is a voltmeter (HIMP verified)."""
        await self._source(0.0)
        try:
            await self._wait_step_reading(step.duration_s)
        finally:
            await self._current_off()
        if self._last_v is not None:
            self.ocv_v[step.number] = self._last_v
            self._event("ocv", f"OCV {self._last_v:.4f} V after step {step.number}", ocv_v=self._last_v)

    async def _wait_step_reading(self, duration_s: float) -> None:
        done = 0.0
        while done < duration_s:
            if not self._resume.is_set():
                await self._current_off()
                await self._checkpoint()
                await self._source(0.0)
            t0 = self._clock.now()
            await self._clock.sleep(min(self._sample_period_s, duration_s - done))
            if self._resume.is_set() and self._output_on:
                await self._read_or_suspend()
            if self.state is RunState.RUNNING:
                done += self._clock.now() - t0
            self._record()

    async def _galvanostatic_step(self, step: PlannedPlate | PlannedStrip) -> None:
        plate = isinstance(step, PlannedPlate)
        current = step.current_a
        self._electro_sign = 1 if plate else -1
        self._step_charge_c, self._time_in_step_s = self._preload or (0.0, 0.0)
        self._preload = None
        if self._store is not None:  # durable before current flows: a crash from here on resumes in this step
            self._record()
            await self._store.flush()
        await self._source(current, integrate=True)
        reason = ""
        try:
            while True:
                await self._clock.sleep(self._sample_period_s)
                if self._abort_reason is not None:
                    raise RunAborted(self._abort_reason)
                if not self._resume.is_set() or not self._output_on:
                    self._record()  # the moment the suspension is acted on (the current still flows): no gap
                    await self._current_off()
                    await self._checkpoint()
                    await self._resume_current(step, current)
                    continue
                r = await self._read_or_suspend()
                if r is None:  # paused while the reading was on its way: record now, not a sample period later
                    self._record()
                    continue
                self._accumulate(self._clock.now(), r.current_a)
                v = r.voltage_v() if r.valid else None
                self._record()
                if plate:
                    assert isinstance(step, PlannedPlate)
                    if step.capacity_c is not None and self._step_charge_c >= step.capacity_c:
                        reason = "capacity reached"
                        break
                    if step.duration_s is not None and self._time_in_step_s >= step.duration_s:
                        reason = "time reached"
                        break
                    if v is not None and v <= -abs(step.voltage_limit_v):
                        reason = f"voltage safeguard {v:.3f} V"
                        self._event("alarm", f"plate stopped by its voltage safeguard at {v:.3f} V", step=self._step_i)
                        break
                else:
                    assert isinstance(step, PlannedStrip)
                    if v is not None and v >= step.cutoff_v:
                        reason = f"cut-off {v:.3f} V"
                        break
                    if self._step_charge_c >= step.capacity_limit_c:
                        reason = "capacity safeguard"
                        self._event("alarm", "strip stopped by its capacity safeguard", step=self._step_i)
                        break
                    if r.overrange:
                        reason = "voltage overrange"
                        break
                # the step's own end comes first: a strip whose voltage ran into compliance past its cut-off has
                # ended (at 500x the cut-off and the compliance arrive in one sample), a plate past its safeguard too
                if r.in_compliance:
                    self._compliance_suspends += 1
                    if self._compliance_suspends > self._max_compliance_suspends:
                        raise RunAborted(f"potentiostat in compliance {self._compliance_suspends} times in one step")
                    self.suspend("compliance", f"potentiostat in compliance at {v} V (limit {self._vlim:g} V)")
                    self._spawn(self._clear_later("compliance"))
                    continue
        finally:
            await self._current_off()
            self.ledger.add(step.cycle, "plate" if plate else "strip", self._step_charge_c)
            self._electro_sign = 0
            self._event(
                "step_end",
                f"{'plate' if plate else 'strip'} ended: {reason or 'interrupted'}; "
                f"{self._step_charge_c / 3.6:.4f} mAh",
                step=self._step_i,
                charge_c=self._step_charge_c,
            )

    def _accumulate(self, t: float, current_a: float) -> None:
        """Add the charge since the last point (trapezoid on the experiment clock) while current flows."""
        if self._acc_t is None:
            return
        dt_s = max(0.0, t - self._acc_t)
        self._step_charge_c += 0.5 * (abs(current_a) + abs(self._acc_i)) * dt_s
        self._time_in_step_s += dt_s
        self._acc_t, self._acc_i = t, current_a

    async def _resume_current(self, step: PlannedStep, current: float) -> None:
        """Zero current until the pressure is back within tolerance for the settle time."""
        kpa = step.pressure_pa / 1e3
        tol = max(self._resume_tol * kpa, 0.5)
        self._event("resume", f"re-establishing {kpa:g} kPa ± {tol:.2g} for {self._settle_after_resume_s:g} s")
        if abs(self._ctl.status().setpoint_kpa - kpa) > 1e-9:
            self._ctl.set_setpoint(kpa)
        while True:
            await self._wait_in_band(kpa, tolerance_kpa=tol, hold_s=self._settle_after_resume_s)
            if self._resume.is_set():
                break
            await self._checkpoint()  # suspended again while settling: wait, then settle again
        await self._source(current, integrate=True)

    async def _clear_later(self, key: str) -> None:
        await self._clock.sleep(self._sup_settings.clear_s)
        self.clear_hold(key)

    async def _read_or_suspend(self) -> PotentiostatReading | None:
        """A reading; a potentiostat that does not answer suspends the run and is reconnected and re-verified."""
        try:
            return await self._read()
        except DeviceError as exc:
            self.suspend("potentiostat", f"potentiostat not answering: {exc}")
            await self._current_off()
            return None

    async def _reconnect_potentiostat(self) -> None:
        """Bounded retries per attempt: close, connect, re-verify the safety settings; clears the hold on success."""
        with contextlib.suppress(Exception):
            await self._pot.close()
        try:
            await self._pot.connect()
            safety = await self._pot.verify_safe(self._vlim)
            output_on = bool(getattr(safety, "output_on", False))
            if self._stray is not None and output_on:
                # the output-off never arrived: the current flowed until now (hardware truth beats saved state)
                t_from, i_a = self._stray
                t_off = self._clock.now()
                await self._pot.output(False)
                extra = abs(i_a) * max(0.0, t_off - t_from)
                self._step_charge_c += extra
                self._time_in_step_s += max(0.0, t_off - t_from)
                self._event(
                    "device", f"the output was still on after the outage: {extra:.6g} C counted", charge_c=extra
                )
            elif self._stray is not None:
                self._event("alarm", "the output was found off after the outage; when it went off is not known")
            self._stray = None
        except (DeviceError, OSError, RuntimeError) as exc:
            self._event("alarm", f"potentiostat reconnect failed: {type(exc).__name__}: {exc}")
            return
        self._event("device", "potentiostat reconnected and re-verified (HIMP, compliance)")
        self.clear_hold("potentiostat")

    # ------------------------------------------------------------------ helpers
    async def _checkpoint(self) -> None:
        if self._abort_reason is not None:
            raise RunAborted(self._abort_reason)
        waited = False
        while not self._resume.is_set():
            if not waited:
                self._record()  # the suspension's first sample at once: no gap in the data while it lasts
            waited = True
            if "potentiostat" in self._holds:
                await self._reconnect_potentiostat()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation (a stop that never ends)
            try:
                async with asyncio.timeout(self._clock_wall(self._sample_period_s)):
                    await self._resume.wait()
            except TimeoutError:
                self._record()
        if self._abort_reason is not None:
            raise RunAborted(self._abort_reason)
        if self._ctl.mode is ControllerMode.TRIPPED:
            raise OverForceTripped(f"over-force trip: {self._ctl.status().trip}")
        if waited and self._suspended_in_step and self.state is RunState.RUNNING:
            self._suspended_in_step = False
            step = self.plan.steps[self._step_i] if self.plan.steps else None
            if step is not None and step.on_resume == "abort":
                raise RunAborted(
                    f"step {step.number} ({step.kind}) cannot be resumed after a suspension (on_resume: abort)"
                )
            if step is not None and step.on_resume == "restart" and not isinstance(step, PlannedPlate | PlannedStrip):
                raise _RestartStep()

    def _clock_wall(self, experiment_s: float) -> float:
        return experiment_s / self._clock.speed

    async def _source(self, current_a: float, *, integrate: bool = False) -> None:
        if not self._resume.is_set() or self._abort_reason is not None:
            return  # suspended (or aborting) meanwhile: the caller's loop sees the output off and waits
        try:
            await self._pot.configure_galvanostatic(
                GalvanostaticConfig(current_a=current_a, voltage_limit_v=self._vlim)
            )
        except DeviceError as exc:  # the output is still off: suspend, reconnect, re-verify
            self.suspend("potentiostat", f"potentiostat not answering: {exc}")
            return
        t_on = self._clock.now()  # the instrument acts on the command as it arrives, not when the call returns
        try:
            await self._pot.output(True)
        except DeviceError as exc:  # maybe on: the reconnect reads the output back and counts the charge
            self._stray = (t_on, current_a) if integrate else None
            self.suspend("potentiostat", f"potentiostat not answering: {exc}")
            return
        self._output_on = True
        self._last_i = current_a
        if integrate:
            self._acc_t, self._acc_i = t_on, current_a
            self._ctl.set_cell_current(current_a)
        if not self._resume.is_set() or self._abort_reason is not None:
            # a hold or an abort arrived while the output was being switched on: its safe state found the output
            # still off and did nothing, so switch it off now (the charge since t_on is counted)
            await self._current_off()

    async def _current_off(self) -> None:
        """Output off; the charge is counted to the command. A second caller (the safe state and the step's own
        end at once) waits for the first, so it returns with the output off, not while it is being switched."""
        async with self._off_lock:
            if not self._output_on:
                return
            self._output_on = False
            flowing = self._acc_t is not None
            current_a = self._acc_i
            sent = self._clock.now()
            if flowing:  # the current flowed until the command: the instrument acts on it as it arrives (as `on`)
                self._accumulate(sent, current_a)
                self._acc_t = None
            self._last_i = 0.0
            with contextlib.suppress(Exception):
                self._ctl.set_cell_current(0.0)
            try:
                await self._pot.output(False)
            except Exception as exc:
                if flowing:  # maybe still on: the reconnect reads it back and counts the charge
                    self._stray = (sent, current_a)
                self._event("alarm", f"could not switch the current off: {type(exc).__name__}: {exc}")

    async def _read(self) -> PotentiostatReading | None:
        """One reading; None when the output went off (a pause) while it was on its way."""
        last: Exception | None = None
        for _ in range(self._read_retries):
            try:
                r = await self._pot.read()
                if not self._output_on:
                    return None
                self._last_v = r.voltage_v() if r.valid else None
                self._last_i = r.current_a
                return r
            except DeviceError as exc:
                if not self._output_on:
                    return None
                last = exc
        assert last is not None
        raise last

    def _record(self, *, ended: bool = False) -> None:
        st = self._ctl.status()
        step = self.plan.steps[self._step_i] if self.plan.steps else None
        t = self._clock.now()
        flags = 0
        if self.state is RunState.PAUSED:
            flags |= FLAG_PAUSED
        if self.state is RunState.SUSPENDED:
            flags |= FLAG_SUSPENDED
        if (self.supervisor is not None and self.supervisor.stale) or not st.sensor_ok:
            flags |= FLAG_STALE
        if self._flag_resumed and self.state is RunState.RUNNING:
            flags |= FLAG_RESUMED
            self._flag_resumed = False
        if ended:
            flags |= FLAG_ENDED
        if self._store is not None:
            self._store.progress(
                step_index=self._step_i,
                cycle=step.cycle if step else 0,
                charge_c=self._step_charge_c,
                time_in_step_s=self._time_in_step_s,
                test_time_s=t,
                state=self.state.value,
            )
            self._store.record(
                Sample(
                    test_time_s=t,
                    unix_time_s=unix_now(),
                    voltage_v=self._last_v,
                    current_a=self._last_i,
                    pressure_pa=None if st.pressure_kpa is None else st.pressure_kpa * 1e3,
                    setpoint_pa=st.setpoint_kpa * 1e3,
                    force_n=st.force_abs_n,
                    position_um=st.position_um,
                    step_index=step.step_index if step else 0,
                    step_count=self._step_i + 1,
                    cycle=step.cycle if step else 0,
                    charge_c=self._step_charge_c,
                    deposit_um=self._deposit_um(st, t),
                    stiffness_n_per_um=st.stiffness_n_per_um,
                    flags=flags,
                )
            )
        if self._on_progress is not None:
            self._on_progress(self.progress())

    def _deposit_um(self, st: Any, t: float) -> float | None:
        """The live deposit thickness estimate (rig.data.porosity) for this reading."""
        net_c = math.fsum(p.plated_c - p.stripped_c for p in self.ledger.pairs.values())
        net_c += self._electro_sign * self._step_charge_c
        in_band = st.pressure_kpa is not None and abs(st.pressure_kpa - st.setpoint_kpa) <= 0.05 * st.setpoint_kpa
        step = self.plan.steps[self._step_i] if self.plan.steps else None
        settled = step is not None and not isinstance(step, PlannedPressure)  # approach, ramp and settle are over
        return self._deposit.add(
            t_s=t,
            position_um=st.position_um,
            force_n=st.force_abs_n,
            stiffness_n_per_um=st.stiffness_n_per_um,
            net_charge_c=net_c,
            holding=settled and st.mode is ControllerMode.HOLD and in_band,
        )

    def progress(self) -> Progress:
        """A snapshot for the display, `rig status` and telemetry."""
        st = self._ctl.status()
        step = self.plan.steps[self._step_i] if self.plan.steps else None
        on = self._output_on
        return Progress(
            state=self.state,
            step_number=self._step_i + 1,
            step_total=len(self.plan.steps),
            step_kind=step.kind if step else "",
            step_label=step.label if step else "",
            cycle=step.cycle if step else 0,
            elapsed_s=self._clock.now(),  # test time: from the start of the run, as stored
            remaining_s=self._remaining_s(),
            pressure_kpa=st.pressure_kpa,
            setpoint_kpa=st.setpoint_kpa,
            voltage_v=self._last_v if on else None,
            current_a=self._last_i if on else 0.0,
            step_charge_c=self._step_charge_c,
            output_on=on,
            reason=self._reason(),
            phase=self._phase,
        )

    def _remaining_s(self) -> float:
        """The plan's estimate for the steps still to come, less the time the present step has already run."""
        if self.state in (RunState.COMPLETED, RunState.ABORTED, RunState.FAILED) or not self.plan.steps:
            return 0.0
        step = self.plan.steps[self._step_i]
        if isinstance(step, PlannedPlate | PlannedStrip):
            in_step = self._time_in_step_s
        else:
            in_step = self._clock.now() - self._step_started_t
        return self._later_s[self._step_i] + max(0.0, step.estimated_duration_s - in_step)

    def _reason(self) -> str:
        """Why the run is not simply running: its holds (paused, suspended) or how it ended."""
        if self.state in (RunState.PAUSED, RunState.SUSPENDED):
            return "; ".join(m for m, _ in self._holds.values())
        if self.state is RunState.ABORTED:
            return self._abort_reason or self._end_reason
        return self._end_reason

    def _set_state(self, state: RunState, why: str) -> None:
        old, self.state = self.state, state
        self._event("state", f"{old.value} -> {state.value}: {why}")
        if self._store is not None:  # state changes reach the progress row at once
            step = self.plan.steps[self._step_i] if self.plan.steps else None
            self._store.progress(
                step_index=self._step_i,
                cycle=step.cycle if step else 0,
                charge_c=self._step_charge_c,
                time_in_step_s=self._time_in_step_s,
                test_time_s=self._clock.now(),
                state=state.value,
            )

    def _event(self, kind: str, message: str, **data: Any) -> None:
        if self._on_event is not None:
            self._on_event(kind, message, data)
        if self._store is not None:
            self._store.event(kind, message, test_time_s=self._clock.now(), unix_time_s=unix_now(), data=data)
