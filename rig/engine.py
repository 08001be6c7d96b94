"""The run engine: executes a validated plan while the pressure controller holds the stack underneath.

States: idle → running ⇄ paused → completed | aborted | failed; every change is recorded as an event. The engine
is the only owner of the potentiostat; the pressure controller is the only owner of the press. Capacity is counted
from the measured current on the experiment clock (trapezoids between readings). A plate ends at its capacity or
time (or at its voltage safeguard); a strip ends at its cut-off (or its capacity safeguard). Pausing switches the
current off (output-off state HIMP, verified at start) and keeps the pressure; resuming waits until the pressure
is back in band for the settle time before any current flows again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from drivers.errors import DeviceError
from drivers.interfaces import GalvanostaticConfig, Potentiostat, PotentiostatReading
from protocols.plan import Plan, PlannedHold, PlannedPlate, PlannedPressure, PlannedRest, PlannedStep, PlannedStrip
from rig.clock import unix_now
from rig.coulombic import CoulombicLedger
from rig.porosity import LiveDepositEstimator
from rig.pressure_controller import ControllerMode, PressureController
from rig.store import FLAG_PAUSED, RunStore, Sample


class RunState(enum.Enum):
    """The run's state."""

    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"


class RunAborted(Exception):
    """The operator (or a signal) aborted the run."""


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


@dataclass
class RunResult:
    """How a run ended."""

    state: RunState
    ledger: CoulombicLedger
    steps_done: int
    reason: str = ""
    ocv_v: dict[int, float] = field(default_factory=dict)

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
        self._step_i = 0
        self._step_charge_c = 0.0
        self._time_in_step_s = 0.0
        self._acc_t: float | None = None
        self._acc_i = 0.0
        self._last_v: float | None = None
        self._last_i: float | None = None
        self._output_on = False
        self._t_start = 0.0
        self._remaining_est_s = plan.estimated_duration_s
        self.ocv_v: dict[int, float] = {}
        # operando deposit thickness (issue 7): net deposited charge = ledger + the running step's, signed
        self._deposit = LiveDepositEstimator(area_cm2=plan.electrode_area_m2 * 1e4)
        self._electro_sign = 0  # +1 while a plate step counts charge, -1 while a strip does

    # ------------------------------------------------------------------ operator commands
    async def pause(self) -> dict[str, Any]:
        """Pause: current off, pressure held."""
        if self.state is RunState.RUNNING:
            self._resume.clear()
            self._set_state(RunState.PAUSED, "operator pause")
            await self._current_off()
        return {"state": self.state.value}

    async def resume(self) -> dict[str, Any]:
        """Resume after a pause (current returns only once the pressure is back in band)."""
        if self.state is RunState.PAUSED:
            self._set_state(RunState.RUNNING, "operator resume")
            self._resume.set()
        return {"state": self.state.value}

    async def abort(self, reason: str = "operator abort") -> dict[str, Any]:
        """Abort: current off at once; the run ends in the safe state."""
        if self.state in (RunState.RUNNING, RunState.PAUSED, RunState.IDLE):
            self._abort_reason = reason
            self._resume.set()
            await self._current_off()
        return {"state": self.state.value}

    async def status(self) -> dict[str, Any]:
        """A snapshot for `rig status`."""
        p = self.progress()
        return {
            "state": p.state.value,
            "step": f"{p.step_number}/{p.step_total} {p.step_kind} {p.step_label}".strip(),
            "pressure_kpa": p.pressure_kpa,
            "voltage_v": p.voltage_v,
            "ice": self.ledger.ice,
        }

    # ------------------------------------------------------------------ the run
    async def run(self) -> RunResult:
        """Execute every step; always ends with the current off and the pressure held or released."""
        self._t_start = self._clock.now()
        steps_done = 0
        reason = ""
        try:
            await self._pot.connect()
            await self._pot.verify_safe(self._vlim)
            self._set_state(RunState.RUNNING, "run started")
            first_kpa = self.plan.steps[0].pressure_pa / 1e3 if self.plan.steps else 0.0
            if self.plan.steps:
                self._event("pressure", f"engaging at {first_kpa:g} kPa")
                await self._ctl.engage(first_kpa)
            for i, step in enumerate(self.plan.steps):
                self._step_i = i
                await self._checkpoint()
                self._event("step", f"step {step.number} {step.kind} {step.label}".strip(), step=i)
                await self._run_step(step)
                steps_done += 1
                self._remaining_est_s = math.fsum(s.estimated_duration_s for s in self.plan.steps[i + 1 :])
            self._set_state(RunState.COMPLETED, "all steps done")
        except RunAborted as exc:
            reason = str(exc)
            self._set_state(RunState.ABORTED, reason)
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self._set_state(RunState.FAILED, reason)
        finally:
            await self._current_off()
            await self._end_pressure()
            summary = {
                "ice": self.ledger.ice,
                "average_ce": self.ledger.average_ce,
                "cycles": self.ledger.efficiencies(),
            }
            self._event("summary", "coulombic efficiency", **summary)
        return RunResult(self.state, self.ledger, steps_done, reason, self.ocv_v)

    async def _end_pressure(self) -> None:
        if self._ctl.mode in (ControllerMode.HOLD, ControllerMode.RELEASE):
            try:
                await asyncio.wait_for(self._ctl.release(preload_kpa=self._release_preload_kpa), 600.0 / 1.0)
                self._event("pressure", f"released to {self._release_preload_kpa:g} kPa")
            except Exception as exc:  # the controller keeps holding where it is
                self._event("alarm", f"release failed, pressure held: {type(exc).__name__}: {exc}")

    async def _run_step(self, step: PlannedStep) -> None:
        await self._ensure_pressure(step)
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
        waiter = asyncio.ensure_future(
            self._ctl.wait_settled(tolerance_kpa=tolerance_kpa, hold_s=hold_s, timeout_s=timeout_s)
        )
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
                await self._read()
            if self.state is RunState.RUNNING:
                done += self._clock.now() - t0
            self._record()

    async def _galvanostatic_step(self, step: PlannedPlate | PlannedStrip) -> None:
        plate = isinstance(step, PlannedPlate)
        current = step.current_a
        self._electro_sign = 1 if plate else -1
        self._step_charge_c = 0.0
        self._time_in_step_s = 0.0
        await self._source(current, integrate=True)
        reason = ""
        try:
            while True:
                await self._clock.sleep(self._sample_period_s)
                if not self._resume.is_set() or not self._output_on:
                    await self._current_off()
                    await self._checkpoint()
                    await self._resume_current(step, current)
                    continue
                r = await self._read()
                if r is None:  # paused while the reading was on its way
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
        finally:
            await self._current_off()
            self.ledger.add(step.cycle, "plate" if plate else "strip", self._step_charge_c)
            self._electro_sign = 0
        self._event(
            "step_end",
            f"{'plate' if plate else 'strip'} ended: {reason}; {self._step_charge_c / 3.6:.4f} mAh",
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
        await self._wait_in_band(kpa, tolerance_kpa=tol, hold_s=self._settle_after_resume_s)
        await self._source(current, integrate=True)

    # ------------------------------------------------------------------ helpers
    async def _checkpoint(self) -> None:
        if self._abort_reason is not None:
            raise RunAborted(self._abort_reason)
        while not self._resume.is_set():
            try:
                await asyncio.wait_for(self._resume.wait(), self._clock_wall(self._sample_period_s))
            except TimeoutError:
                self._record()
        if self._abort_reason is not None:
            raise RunAborted(self._abort_reason)
        if self._ctl.mode is ControllerMode.TRIPPED:
            raise RuntimeError(f"over-force trip: {self._ctl.status().trip}")

    def _clock_wall(self, experiment_s: float) -> float:
        return experiment_s / self._clock.speed

    async def _source(self, current_a: float, *, integrate: bool = False) -> None:
        await self._pot.configure_galvanostatic(GalvanostaticConfig(current_a=current_a, voltage_limit_v=self._vlim))
        await self._pot.output(True)
        self._output_on = True
        self._last_i = current_a
        if integrate:
            self._acc_t, self._acc_i = self._clock.now(), current_a
            self._ctl.set_cell_current(current_a)

    async def _current_off(self) -> None:
        if not self._output_on:
            return
        self._output_on = False
        if self._acc_t is not None:  # the current flowed until now: count it
            self._accumulate(self._clock.now(), self._acc_i)
            self._acc_t = None
        self._last_i = 0.0
        with contextlib.suppress(Exception):
            self._ctl.set_cell_current(0.0)
        try:
            await self._pot.output(False)
        except Exception as exc:
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

    def _record(self) -> None:
        st = self._ctl.status()
        step = self.plan.steps[self._step_i] if self.plan.steps else None
        t = self._clock.now()
        if self._store is not None:
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
                    flags=FLAG_PAUSED if self.state is RunState.PAUSED else 0,
                )
            )
        if self._on_progress is not None:
            self._on_progress(self.progress())

    def _deposit_um(self, st: Any, t: float) -> float | None:
        """The live deposit thickness estimate (rig.porosity) for this reading."""
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
        """A snapshot for the display."""
        st = self._ctl.status()
        step = self.plan.steps[self._step_i] if self.plan.steps else None
        return Progress(
            state=self.state,
            step_number=self._step_i + 1,
            step_total=len(self.plan.steps),
            step_kind=step.kind if step else "",
            step_label=step.label if step else "",
            cycle=step.cycle if step else 0,
            elapsed_s=self._clock.now() - self._t_start,
            remaining_s=self._remaining_est_s,
            pressure_kpa=st.pressure_kpa,
            setpoint_kpa=st.setpoint_kpa,
            voltage_v=self._last_v,
            current_a=self._last_i,
            step_charge_c=self._step_charge_c,
        )

    def _set_state(self, state: RunState, why: str) -> None:
        old, self.state = self.state, state
        self._event("state", f"{old.value} -> {state.value}: {why}")

    def _event(self, kind: str, message: str, **data: Any) -> None:
        if self._store is not None:
            self._store.event(kind, message, test_time_s=self._clock.now(), unix_time_s=unix_now(), data=data)
