"""The shared physics model of the simulated rig: press, stack, deposit, creep, load-cell sensor, Na||Al cell.

One `RigModel` is shared by every simulated device. It advances lazily to the experiment clock whenever a
device looks at it (and from a background ticker), integrating in sub-steps small enough for the creep and for
the steep end of a strip. SI inside: N, µm for positions (named), C for charge, A, V, s.

Sign conventions: positive platen motion closes the press. Positive current is anodic at the Al working
electrode (stripping Na); negative current plates Na. Voltage is Al (working) minus Na (counter).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from hardware_sim.axis import Axis
from hardware_sim.params import C_PER_MAH, NA_UM_PER_MAH_CM2, SimParams

SourceMode = Literal["current", "open", "short"]

_MAX_SUBSTEP_S = 2.0
_MIN_PRESSURE_KPA = 1.0
_DRIFT_GRID_S = 1.0


class ClockLike(Protocol):
    """The experiment clock the model runs on."""

    @property
    def speed(self) -> float:
        """Time-scale factor."""
        ...

    def now(self) -> float:
        """Experiment seconds."""
        ...

    def wall_s(self, experiment_s: float) -> float:
        """Wall seconds for some experiment seconds."""
        ...


@dataclass(frozen=True)
class Measurement:
    """What a source-measure unit sees at its terminals."""

    voltage_v: float
    current_a: float
    in_compliance: bool


class _DriftWalk:
    """A load cell's random-walk drift on a fixed experiment-time grid, linear between grid points.

    Its own random stream (seeded by the model seed and the channel), so its path is a function of experiment
    time alone: it does not depend on how often, or in which order, anybody looks at the model.
    """

    def __init__(self, *, seed: str, sigma_n_per_sqrt_s: float, t0: float) -> None:
        self._rng = random.Random(seed)
        self._step = sigma_n_per_sqrt_s * math.sqrt(_DRIFT_GRID_S)
        self._t0 = t0
        self._i = 0
        self._v0 = 0.0
        self._v1 = self._rng.gauss(0.0, self._step)

    def value_n(self, t: float) -> float:
        """Drift at experiment time `t` (N); time may only move forward."""
        k = max(0.0, (t - self._t0) / _DRIFT_GRID_S)
        while k >= self._i + 1:
            self._i += 1
            self._v0 = self._v1
            self._v1 = self._v0 + self._rng.gauss(0.0, self._step)
        return self._v0 + (k - self._i) * (self._v1 - self._v0)


def _stack_compression_um(force_n: float, k0: float, hardening_um: float) -> float:
    """Compression of a hardening stack, F = k0·δ·(1 + δ/δh), solved for δ."""
    if force_n <= 0:
        return 0.0
    return 0.5 * hardening_um * (-1.0 + math.sqrt(1.0 + 4.0 * force_n / (k0 * hardening_um)))


class RigModel:
    """The whole simulated rig's physics on one experiment clock."""

    def __init__(self, params: SimParams | None = None, *, clock: ClockLike) -> None:
        self.params = params or SimParams()
        self.clock = clock
        self.axis = Axis()
        self._t = clock.now()
        self._t_start = self._t
        self._rng = random.Random(self.params.seed)
        p = self.params
        self.area_cm2 = p.mechanics.area_cm2
        self.area_m2 = p.mechanics.area_m2
        # mechanics state
        self.creep_um = 0.0
        self.deposit_um = 0.0
        self.deposit_charge_c = 0.0  # charge-equivalent of what the deposit holds (for porosity bookkeeping)
        self.pin_pressure_kpa: float | None = None  # an ideal press: hold exactly this pressure
        self._force_n = 0.0
        # electrochemistry state (coulombs)
        self.na_rev_c = 0.0
        self.sei_c = 0.0
        self.dead_c = 0.0
        self.plated_c = 0.0  # cumulative plating charge through the terminals
        self.stripped_c = 0.0
        self.short_c = 0.0  # charge that flowed through a NORMAL output-off short
        self.cap_c = p.cell.al_ocv_v * self._capacitance_f()  # pristine Al sits at its OCV
        self._mode: SourceMode = "open"
        self._i_set = 0.0
        self._vlim = 21.0
        self._short_limit_a = 0.1
        self._last = Measurement(voltage_v=p.cell.al_ocv_v, current_a=0.0, in_compliance=False)
        self.forced_compliance = False  # fault injection: report compliance regardless
        # load-cell sensors: one drift path per channel
        self._drift: dict[str, _DriftWalk] = {}
        self._update_force()

    # ------------------------------------------------------------------ time
    def advance(self) -> None:
        """Integrate the physics up to `clock.now()`."""
        t_end = self.clock.now()
        while self._t < t_end:
            dt = min(t_end - self._t, self._substep_s())
            self._step(dt)

    def _substep_s(self) -> float:
        if self._mode == "open" and not self.axis.moving:
            return _MAX_SUBSTEP_S * 5
        # keep each step's charge small against the steep end of a strip
        i = abs(self._i_set) if self._mode == "current" else 0.01
        q_tail = self.params.cell.tail_mah_cm2 * C_PER_MAH * self.area_cm2
        return max(0.01, min(_MAX_SUBSTEP_S, q_tail / 20 / max(i, 1e-9)))

    def _step(self, dt: float) -> None:
        t_new = self._t + dt
        self.axis.advance_to(t_new)
        self._t = t_new
        self._update_force()
        self._creep(dt)
        self._electrochem(dt)
        self._update_force()

    # ------------------------------------------------------------ mechanics
    def _capacitance_f(self) -> float:
        return self.params.cell.capacitance_f_cm2 * self.area_cm2

    @property
    def platen_um(self) -> float:
        """Where the platen really is (µm from its zero)."""
        return self.axis.actual_pulses * self.params.mechanics.um_per_pulse

    def penetration_um(self) -> float:
        """How far the platen has pushed into spring and stack."""
        m = self.params.mechanics
        return self.platen_um - m.initial_gap_um + self.deposit_um - self.creep_um

    def force_for_penetration_n(self, u_um: float) -> float:
        """Solve the series spring + hardening stack for the force at penetration `u_um`."""
        if u_um <= 0:
            return 0.0
        m = self.params.mechanics
        ks = m.spring_n_per_um * m.stiffness_scale
        k0 = m.stack_n_per_um * m.stiffness_scale
        lo, hi = 0.0, ks * u_um
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if mid / ks + _stack_compression_um(mid, k0, m.stack_hardening_um) > u_um:
                hi = mid
            else:
                lo = mid
            if hi - lo < 1e-7:
                break
        return 0.5 * (lo + hi)

    def stiffness_n_per_um(self) -> float:
        """Local series stiffness dF/du at the present force."""
        m = self.params.mechanics
        ks = m.spring_n_per_um * m.stiffness_scale
        k0 = m.stack_n_per_um * m.stiffness_scale
        dd = _stack_compression_um(self._force_n, k0, m.stack_hardening_um)
        k_stack = k0 * (1 + 2 * dd / m.stack_hardening_um)
        return 1.0 / (1.0 / ks + 1.0 / k_stack)

    def _update_force(self) -> None:
        if self.pin_pressure_kpa is not None:
            self._force_n = self.pin_pressure_kpa * 1e3 * self.area_m2
        else:
            self._force_n = self.force_for_penetration_n(self.penetration_um())
        self.axis.stalled = self._force_n >= self.params.mechanics.stall_force_n

    def _creep(self, dt: float) -> None:
        m = self.params.mechanics
        p_kpa = self.pressure_kpa()
        if p_kpa <= 0 or m.creep_rate_um_per_s == 0 or self.pin_pressure_kpa is not None:
            return
        rate = (
            m.creep_rate_um_per_s
            * (p_kpa / m.creep_ref_pressure_kpa) ** m.creep_stress_exponent
            / (1 + self.creep_um / m.creep_hardening_um) ** m.creep_hardening_exponent
        )
        self.creep_um += rate * dt

    @property
    def force_n(self) -> float:
        """True force on the stack now (N)."""
        return self._force_n

    def pressure_kpa(self) -> float:
        """True stack pressure now (kPa)."""
        return self._force_n / self.area_m2 / 1e3

    # ------------------------------------------------------------ sensors
    def sensor_force_n(self, channel: str = "loadcell") -> float:
        """The force a sensor channel sees now: true force plus that channel's noise and drift (N)."""
        self.advance()
        s = self.params.loadcell_sensor
        walk = self._drift.get(channel)
        if walk is None:
            walk = self._drift[channel] = _DriftWalk(
                seed=f"{self.params.seed}:{channel}", sigma_n_per_sqrt_s=s.drift_n_per_sqrt_s, t0=self._t_start
            )
        drift = walk.value_n(self._t)
        warm = s.warmup_drift_n * (1 - math.exp(-(self._t - self._t_start) / s.warmup_tau_s))
        return self._force_n + drift + warm + self._rng.gauss(0.0, s.noise_n)

    # ------------------------------------------------------ electrochemistry
    def _pressure_s(self, p_kpa: float) -> float:
        """Fall-off coordinate: 0 at and above the optimum, 1 at 10 kPa (model)."""
        e = self.params.electrolyte_params
        p = max(p_kpa, _MIN_PRESSURE_KPA)
        if p >= e.optimum_pressure_kpa:
            return 0.0
        return (math.log(e.optimum_pressure_kpa / p) / math.log(e.optimum_pressure_kpa / 10.0)) ** e.falloff_exponent

    def first_cycle_loss(self, p_kpa: float) -> float:
        """Model first-cycle inventory loss fraction at a plating/stripping pressure (1 − ICE)."""
        e = self.params.electrolyte_params
        ice = e.ice_at_optimum - (e.ice_at_optimum - e.ice_at_10kpa) * self._pressure_s(p_kpa)
        return 1.0 - max(ice, 0.3)

    def porosity_at(self, p_kpa: float) -> float:
        """Model porosity of Na plated at `p_kpa` (ground truth)."""
        e = self.params.electrolyte_params
        phi = e.porosity_at_optimum + (e.porosity_at_10kpa - e.porosity_at_optimum) * self._pressure_s(p_kpa)
        return min(max(phi, 0.0), 0.9)

    def _later_cycle_factor(self) -> float:
        """Loss rate multiplier: 1 for the first 1 mAh/cm² plated, decaying to a floor after (model)."""
        e = self.params.electrolyte_params
        q_areal = self.plated_c / C_PER_MAH / self.area_cm2
        if q_areal <= 1.0 + 1e-9:
            return 1.0
        return e.later_cycle_loss_floor + (1 - e.later_cycle_loss_floor) * math.exp(-(q_areal - 1.0))

    def _overpotential_v(self, current_a: float, p_kpa: float) -> float:
        """Signed overpotential for a current (A) at a pressure."""
        if current_a == 0:
            return 0.0
        e = self.params.electrolyte_params
        j_ma = abs(current_a) * 1e3 / self.area_cm2
        r = e.r_inf_ohm_cm2 * (1 + math.sqrt(e.r_pressure_kpa / max(p_kpa, _MIN_PRESSURE_KPA)))
        eta = r * j_ma * 1e-3 + e.tafel_v * math.asinh(j_ma / (2 * e.j0_ma_cm2))
        if current_a < 0:
            q_nuc = self.params.cell.nucleation_mah_cm2 * C_PER_MAH * self.area_cm2
            eta += e.nucleation_v * math.exp(-self.na_rev_c / q_nuc)
        return math.copysign(eta, current_a)

    def equilibrium_v(self, *, plating: bool = False) -> float:
        """Open-circuit potential of the Al electrode vs Na for the present inventory."""
        c = self.params.cell
        if self.na_rev_c <= 0:
            return self.cap_c / self._capacitance_f()
        if plating:
            return 0.0
        q_tail = c.tail_mah_cm2 * C_PER_MAH * self.area_cm2
        x = min(self.na_rev_c / q_tail, 1.0)
        return c.exhaustion_v * (1 - x) ** 3

    def _terminal(self) -> Measurement:
        """Voltage and current at the terminals for the present source mode."""
        p = self.pressure_kpa()
        if self._mode == "open":
            return Measurement(self.equilibrium_v(), 0.0, False)
        if self._mode == "short":
            # a 0 V source across the cell: the surface potential drives a plating current through it
            e_eq = self.equilibrium_v()
            r_short = self.params.cell.short_resistance_ohm
            i = self._solve_current(e_eq, target_v=0.0, i_max=self._short_limit_a, p_kpa=p, extra_r=r_short)
            return Measurement(0.0, i, False)
        i_set = self._i_set
        e_eq = self.equilibrium_v(plating=i_set < 0)
        v = e_eq + self._overpotential_v(i_set, p)
        if abs(v) <= self._vlim and not self.forced_compliance:
            return Measurement(v, i_set, False)
        if abs(v) <= self._vlim:  # forced (fault injection): report compliance, physics unchanged
            return Measurement(v, i_set, True)
        v_c = math.copysign(self._vlim, v)
        # in compliance the source holds V = ±Vlim; the current is whatever the cell then draws
        i = self._solve_current(e_eq, target_v=v_c, i_max=abs(i_set), p_kpa=p, sign=math.copysign(1.0, i_set))
        return Measurement(v_c, i, True)

    def _solve_current(
        self, e_eq: float, *, target_v: float, i_max: float, p_kpa: float, sign: float = 1.0, extra_r: float = 0.0
    ) -> float:
        """|I| ≤ i_max (with `sign`) such that e_eq + η(I) + I·extra_r = target_v, clamped to [0, i_max]."""

        def f(i: float) -> float:
            return e_eq + self._overpotential_v(i, p_kpa) + i * extra_r - target_v

        if extra_r:  # short: current flows to pull e_eq to target_v
            sign = -1.0 if e_eq > target_v else 1.0
        lo, hi = 0.0, i_max
        if f(sign * hi) * sign <= 0:
            return sign * hi
        if f(sign * lo) * sign >= 0:
            return 0.0
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            if f(sign * mid) * sign > 0:
                hi = mid
            else:
                lo = mid
        return sign * 0.5 * (lo + hi)

    def _electrochem(self, dt: float) -> None:
        meas = self._terminal()
        self._last = meas
        i = meas.current_a
        if i == 0:
            return
        q = abs(i) * dt
        p = self.pressure_kpa()
        if self._mode == "short":
            self.short_c += q
        if i < 0:  # plating
            self.plated_c += q
            if self.na_rev_c <= 0 and self.cap_c > 0:
                used = min(self.cap_c, q)
                self.cap_c -= used
                q -= used
            if q <= 0:
                return
            loss = self.first_cycle_loss(p)
            sei_frac = self.params.electrolyte_params.sei_share_of_loss * loss * self._later_cycle_factor()
            self.sei_c += sei_frac * q
            self.na_rev_c += (1 - sei_frac) * q
            phi = self.porosity_at(p)
            self.deposit_um += q / C_PER_MAH / self.area_cm2 * NA_UM_PER_MAH_CM2 / (1 - phi)
            self.deposit_charge_c += q
        else:  # stripping
            self.stripped_c += q
            if self.na_rev_c <= 0:
                self.cap_c += q
                return
            loss = self.first_cycle_loss(p)
            sigma = self.params.electrolyte_params.sei_share_of_loss
            delta = loss * (1 - sigma) / (1 - loss) * self._later_cycle_factor()
            take = min(self.na_rev_c, q * (1 + delta))
            q_elec = take / (1 + delta)
            self.na_rev_c -= take
            self.dead_c += take - q_elec
            if self.deposit_charge_c > 0:
                frac = min(q_elec / self.deposit_charge_c, 1.0)
                self.deposit_um -= self.deposit_um * frac
                self.deposit_charge_c -= q_elec
            if self.na_rev_c <= 1e-15:
                self.na_rev_c = 0.0
                self.cap_c = self.params.cell.exhaustion_v * self._capacitance_f() + (q - q_elec)

    def set_source(
        self, mode: SourceMode, *, current_a: float = 0.0, voltage_limit_v: float = 21.0, current_limit_a: float = 0.1
    ) -> None:
        """Set what the potentiostat applies: a current with compliance, an open circuit, or a 0 V short.

        `current_limit_a` bounds the current a 0 V short may draw (a real 2450 limits its NORMAL output-off
        state to 10 % of the present current range).
        """
        self.advance()
        self._mode = mode
        self._short_limit_a = abs(current_limit_a)
        self._i_set = current_a if mode == "current" else 0.0
        self._vlim = abs(voltage_limit_v)

    @property
    def source_mode(self) -> SourceMode:
        """What the potentiostat applies now."""
        return self._mode

    def measure(self) -> Measurement:
        """Voltage and current at the cell terminals now."""
        self.advance()
        return self._terminal()

    # ------------------------------------------------------------- truth
    def deposit_porosity(self) -> float:
        """Apparent porosity of what is deposited now (ground truth)."""
        if self.deposit_charge_c <= 0 or self.deposit_um <= 0:
            return 0.0
        dense_um = self.deposit_charge_c / C_PER_MAH / self.area_cm2 * NA_UM_PER_MAH_CM2
        return max(0.0, 1.0 - dense_um / self.deposit_um)

    def state(self) -> dict[str, Any]:
        """Ground truth, for tests, benchmarks and the control port."""
        self.advance()
        meas = self._terminal()
        return {
            "t_s": self._t,
            "speed": self.clock.speed,
            "electrolyte": self.params.electrolyte,
            "stiffness_scale": self.params.mechanics.stiffness_scale,
            "counter_pulses": self.axis.counter_pulses,
            "platen_um": self.platen_um,
            "moving": self.axis.moving,
            "force_n": self._force_n,
            "pressure_kpa": self.pressure_kpa(),
            "stiffness_n_per_um": self.stiffness_n_per_um(),
            "creep_um": self.creep_um,
            "deposit_um": self.deposit_um,
            "deposit_porosity": self.deposit_porosity(),
            "porosity_at_pressure": self.porosity_at(self.pressure_kpa()),
            "na_rev_c": self.na_rev_c,
            "sei_c": self.sei_c,
            "dead_c": self.dead_c,
            "plated_c": self.plated_c,
            "stripped_c": self.stripped_c,
            "short_c": self.short_c,
            "source_mode": self._mode,
            "voltage_v": meas.voltage_v,
            "current_a": meas.current_a,
            "in_compliance": meas.in_compliance,
        }
