"""The pressure-control law: pure Python, no I/O, no asyncio, no clock of its own.

Units: force in N, position in µm, time in experiment seconds. Positive motion closes the press. A growing
deposit acts like closing the press: it adds to the penetration of the platen into spring and stack.

The law is a position-increment (velocity-form) law for a stepper press, see
docs/decisions/0011-pressure-control-law.md:

    Δx = gain · (F_ref − F) / k_est          outside the deadband, at least one pulse, clipped to the move limit

- The stepper integrates the increments, so the press position *is* the integral state. A travel limit clips
  the target and nothing else accumulates: anti-windup by construction. The ramped reference is held back to
  the measured force while the press is saturated, so it cannot wind up either.
- `k_est` is an online estimate of the series stiffness dF/dx from past moves (`StiffnessEstimator`), so the
  same gain holds across stack stiffness ×0.1–×10 without retuning. The gain is a dimensionless fraction of
  the predicted correction; changing it (or the setpoint) leaves no hidden state to bump.
- Deadband = one pulse's force (k_est × µm/pulse) × a fraction above ½ plus a multiple of the measured noise:
  a one-pulse correction from the edge of the band lands inside it, so the press does not hunt on noise or on
  its own quantisation. Reversals widen it (anti-hunting); it relaxes back slowly.
- Per-cycle move limit = `max_step_force_n / k_upper`, where `k_upper` is the rig's maximum stiffness until the
  stack has been measured and `stiffness_safety × k_est` after: one cycle can never change the force by more
  than `max_step_force_n`, even on the stiffest stack. Also at most the travel the press makes in one period.
- Feed-forward (switchable): the penetration the stack will gain before the next reading — the predicted
  dense-Na growth (8.86 µm per mAh/cm² of the charge the current passes), scaled by an online estimate `s` of
  the real growth, plus the slow drift `c` (creep), both learned from the measured response
  (`DisturbanceEstimator`) — is acted on now: the deadband test uses the predicted error and the move gives
  that displacement back on top of the feedback, before a force error appears.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "COULOMB_PER_MAH",
    "NA_DENSE_UM_PER_MAH_CM2",
    "DisturbanceEstimator",
    "FrozenCheck",
    "JumpFilter",
    "LawSettings",
    "Move",
    "PressureLaw",
    "ReadingVerdict",
    "SetpointRamp",
    "StiffnessEstimator",
    "classify_reading",
    "deposit_growth_um",
    "robust_period_s",
    "saturation_may_be_real",
]

NA_DENSE_UM_PER_MAH_CM2: Final = 8.86  # paper: dense Na thickness per areal capacity
COULOMB_PER_MAH: Final = 3.6


def deposit_growth_um(current_a: float, dt_s: float, area_cm2: float) -> float:
    """Predicted dense-Na deposit growth for a current over `dt_s`; plating (negative current) grows it."""
    charge_mah = -current_a * dt_s / COULOMB_PER_MAH
    return charge_mah / area_cm2 * NA_DENSE_UM_PER_MAH_CM2


def _round_half_away(x: float) -> int:
    """Round to the nearest integer, halves away from zero (symmetric, unlike round())."""
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


# --------------------------------------------------------------------------------------- reading freshness


@dataclass(frozen=True)
class ReadingVerdict:
    """Whether a force reading may move the press, and why not."""

    usable: bool
    reason: str = ""


def classify_reading(
    *,
    valid: bool,
    seq: int,
    t_s: float,
    now_s: float,
    last_seq: int | None,
    max_age_s: float,
    identical_count: int = 0,
    frozen_after: int = 0,
) -> ReadingVerdict:
    """Decide whether a reading is usable: valid, a new sequence number, young enough and not frozen."""
    if not valid:
        return ReadingVerdict(False, "invalid")
    if last_seq is not None and seq <= last_seq:
        return ReadingVerdict(False, "stale: repeated sequence number")
    age = now_s - t_s
    if age > max_age_s:
        return ReadingVerdict(False, f"stale: {age:.3g} s old (limit {max_age_s:.3g} s)")
    if frozen_after > 0 and identical_count >= frozen_after:
        return ReadingVerdict(False, f"stale: value frozen for {identical_count} readings")
    return ReadingVerdict(True)


def robust_period_s(
    intervals: Sequence[float], *, nominal_s: float, quantile: float = 0.9, floor_s: float = 0.0
) -> float:
    """The sample period the loop really achieves: a high quantile of recent intervals between fresh samples.

    Never below the nominal period nor `floor_s` (the finest schedule the host can be trusted to keep, in experiment
    seconds). A quantile, not the last interval or the mean: one slow cycle neither makes the next stale limit
    generous nor, by being absent, makes it tight enough to call ordinary jitter stale.
    """
    base = max(nominal_s, floor_s)
    finite = sorted(v for v in intervals if math.isfinite(v) and v > 0)
    if not finite:
        return base
    idx = min(len(finite) - 1, max(0, math.ceil(quantile * len(finite)) - 1))
    return max(base, finite[idx])


class FrozenCheck:
    """Motion/force cross-check: the press moved, the force should have answered, the reading did not.

    Only what the press did counts: each pair of usable readings in contact that brackets a move (the commanded
    position differs between them) adds its travel and its force change to running sums; between moves the
    force is left alone, because there the stack's own creep, a growing deposit or the sensor's drift move it,
    not the press (a controller holding a creeping stack advances the press while the force stays put, which
    the anchor-to-now comparison this replaced called frozen once the noise happened not to exceed its band).
    When the force answered (the summed change reached half of what the summed travel must cause at a *low*
    stiffness `k_low`, or a few noise levels), the sums restart. When the travel reaches `min_travel_um` and the
    expected change `sigmas` noise levels, but the force answered less than half of it, the sensor is frozen.
    The verdict holds until the reading changes by more than the noise allows from the value it froze at. Out of
    contact (an open gap) the force does not depend on the position, so nothing is checked there.
    """

    def __init__(self, *, sigmas: float = 10.0, min_travel_um: float = 1.5, answer_fraction: float = 0.5) -> None:
        self.sigmas = sigmas
        self.min_travel_um = min_travel_um
        self.answer_fraction = answer_fraction
        self._prev: tuple[float, float] | None = None  # (force, position) of the previous reading
        self._travel_um = 0.0  # signed travel of the moves since the force last answered
        self._answer_n = 0.0  # signed force change across those moves
        self._frozen_at_n = 0.0
        self.frozen_reason = ""

    def reset(self) -> None:
        """Forget the sums (after a gap in the data, a re-engage or a tare)."""
        self._prev = None
        self._travel_um = self._answer_n = 0.0
        self.frozen_reason = ""

    def update(
        self, *, force_n: float, position_um: float, k_low_n_per_um: float, noise_n: float, in_contact: bool
    ) -> str:
        """One usable reading at the commanded press position; returns "" or why the sensor looks frozen."""
        if not in_contact:
            self.reset()
            return ""
        prev, self._prev = self._prev, (force_n, position_um)
        if self.frozen_reason:
            if abs(force_n - self._frozen_at_n) > 3 * noise_n:  # it moves again: start over from here
                self._travel_um = self._answer_n = 0.0
                self.frozen_reason = ""
            return self.frozen_reason
        if prev is None or position_um == prev[1]:
            return ""  # no move since the last reading: what the force does is not the press's doing
        self._travel_um += position_um - prev[1]
        self._answer_n += force_n - prev[0]
        travel = abs(self._travel_um)
        expected = k_low_n_per_um * travel
        answered = abs(self._answer_n)
        if answered >= max(self.answer_fraction * expected, 3 * noise_n):
            self._travel_um = self._answer_n = 0.0
            return ""
        if travel >= self.min_travel_um and expected >= self.sigmas * noise_n:
            self._frozen_at_n = force_n
            self.frozen_reason = (
                f"frozen: the press moved {travel:.1f} µm (≥ {expected:.3f} N expected at {k_low_n_per_um:.4f} N/µm) "
                f"and the force changed by {answered:.4f} N"
            )
        return self.frozen_reason


class JumpFilter:
    """One-sample spike rejection: a force that jumped further than physics allows in one period is held back.

    `limit_n` is the largest change one period can bring (the controller's per-cycle move limit, with margin, plus
    the noise). A reading further than that from the last accepted one is *suspect*: it is not used (no motion, and
    it cannot trip anything yet). The next reading confirms it when it is also beyond the limit on the same side
    (the jump persisted: a real step, or a runaway, is then acted on one period late); a reading back near the
    accepted value rejects it (a spike). A suspect followed by another suspect on the other side is rejected too.
    """

    def __init__(self) -> None:
        self.accepted_n: float | None = None
        self._suspect_n: float | None = None
        self.spikes = 0

    def reset(self) -> None:
        """Forget the reference (after a gap in the data)."""
        self.accepted_n = None
        self._suspect_n = None

    def check(self, value_n: float, limit_n: float) -> str:
        """ "" when `value_n` may be used (it becomes the reference), else why it is held back."""
        ref = self.accepted_n
        if ref is None or abs(value_n - ref) <= limit_n:
            if self._suspect_n is not None:
                self.spikes += 1
            self._suspect_n = None
            self.accepted_n = value_n
            return ""
        suspect = self._suspect_n
        if suspect is not None and (suspect - ref) * (value_n - ref) > 0:
            self._suspect_n = None
            self.accepted_n = value_n  # the jump persisted: it is real
            return ""
        if suspect is not None:
            self.spikes += 1
        self._suspect_n = value_n
        return f"spike: {value_n - ref:+.3f} N in one period (plausible ≤ {limit_n:.3f} N); held until confirmed"


def saturation_may_be_real(last_force_n: float | None, hard_limit_n: float, max_change_n: float) -> bool:
    """A saturated (overload / over-range) reading trips the over-force when the force could really be there.

    The stack's force changes by at most `max_change_n` between two readings (the move limit); after a usable
    reading within that reach of the hard limit (or with no usable reading at all) saturation may be a real
    over-force. From far below the limit it cannot be: it is invalid data (no motion, stale), not a trip.
    """
    return last_force_n is None or last_force_n >= hard_limit_n - max_change_n


# --------------------------------------------------------------------------------------------- the ramp


class SetpointRamp:
    """A reference that moves towards its target at a bounded rate (N/s); infinite rate means a step."""

    def __init__(self, value_n: float = 0.0) -> None:
        self.value_n = value_n
        self.target_n = value_n
        self.rate_n_per_s = math.inf
        self._t_s: float | None = None
        self._dt_s = 0.0
        self._growth_rate_um_per_s = 0.0

    def set_target(self, target_n: float, rate_n_per_s: float, *, t_s: float, start_n: float | None = None) -> None:
        """Ramp to `target_n` from the present value (or from `start_n`: bumpless transfer)."""
        if not rate_n_per_s > 0:
            raise ValueError(f"ramp rate must be > 0, got {rate_n_per_s}")
        if start_n is not None:
            self.value_n = start_n
        self.target_n = target_n
        self.rate_n_per_s = rate_n_per_s
        self._t_s = t_s

    def advance(self, t_s: float) -> float:
        """Move the value towards the target for the time since the last call; returns it."""
        if self._t_s is None:
            self._t_s = t_s
        dt = max(0.0, t_s - self._t_s)
        self._t_s = max(self._t_s, t_s)
        gap = self.target_n - self.value_n
        step = self.rate_n_per_s * dt
        self.value_n = self.target_n if abs(gap) <= step else self.value_n + math.copysign(step, gap)
        return self.value_n

    def hold_back(self, measured_n: float, margin_n: float) -> None:
        """Anti-windup: keep the value within `margin_n` of what the saturated process reached."""
        self.value_n = min(max(self.value_n, measured_n - margin_n), measured_n + margin_n)

    @property
    def ramping(self) -> bool:
        """True until the value has reached the target."""
        return self.value_n != self.target_n


# ---------------------------------------------------------------------------------- stiffness estimate


class StiffnessEstimator:
    """Series stiffness dF/dx (N/µm) by least squares over past moves, with a bounded memory.

    Each observation is one move episode: Δx (µm) and the force change ΔF it caused. The sums Σ Δx² and
    Σ Δx·ΔF are kept; when the information they hold, Σ Δx² · k², exceeds `memory_n2` both are scaled down
    ("constant trace", counted in force² so that it means the same on a soft and on a stiff stack). Old data
    thus fades in proportion to new *information*: a one-pulse move lost in the noise barely moves an estimate
    built from large moves. A prior worth `prior_um2` of data at `k_initial` starts it (the rig's stiffest
    stack, so the first moves are small). The result is clipped to [k_min, k_max].
    """

    def __init__(
        self, *, k_initial: float, k_min: float, k_max: float, prior_um2: float = 1.0, memory_n2: float = 20.0
    ) -> None:
        if not 0 < k_min <= k_max:
            raise ValueError(f"need 0 < k_min <= k_max, got {k_min}, {k_max}")
        self.k_min = k_min
        self.k_max = k_max
        self.memory_n2 = memory_n2
        self._sxx = prior_um2
        self._sxy = min(max(k_initial, k_min), k_max) * prior_um2
        self.observations = 0

    def update(self, dx_um: float, df_n: float) -> None:
        """Add one move episode."""
        if dx_um == 0 or not (math.isfinite(dx_um) and math.isfinite(df_n)):
            return
        self._sxx += dx_um * dx_um
        self._sxy += dx_um * df_n
        self.observations += 1
        information = self._sxx * self.value**2
        if information > self.memory_n2:
            f = self.memory_n2 / information
            self._sxx *= f
            self._sxy *= f

    @property
    def value(self) -> float:
        """The estimate (N/µm), clipped to [k_min, k_max]."""
        return min(max(self._sxy / self._sxx, self.k_min), self.k_max)

    def upper(self, safety: float) -> float:
        """A stiffness the stack is very unlikely to exceed: `safety` × estimate, never above k_max."""
        return min(self.k_max, safety * self.value)


# ----------------------------------------------------------------------------- feed-forward scale estimate


class DisturbanceEstimator:
    """What pushes the stack between moves: real growth per predicted growth `s`, plus a drift `c` (µm/s).

    Model over a window: the stack gained `s·Δh + c·Δt` of penetration (Δh = predicted dense growth from the
    charge; c·Δt = creep and any other slow drift, negative when the stack relaxes), which the measured response
    shows as `ΔF/k − Δx` (force change not yet corrected, minus what the press gave back). A two-state Kalman
    filter: a confident prior on s = 1 that changes slowly, a loose prior on c that may wander in proportion to
    its size (a power-law creep rate decays quickly at first, slowly later).
    During a constant current the two regressors are collinear and the deviation goes into c; when the current
    changes (plate → strip) s is resolved.
    """

    def __init__(
        self,
        *,
        s_prior: float = 1.0,
        s_sigma: float = 0.15,
        c_sigma_um_per_s: float = 0.01,
        s_bounds: tuple[float, float] = (0.5, 2.5),
        c_bound_um_per_s: float = 0.1,
        s_walk_per_window: float = 0.005,
        c_walk_fraction: float = 0.2,
        c_walk_min_um_per_s: float = 2e-5,
    ) -> None:
        self.s = s_prior
        self.c_um_per_s = 0.0
        self.s_bounds = s_bounds
        self.c_bound_um_per_s = c_bound_um_per_s
        self._p = [[s_sigma**2, 0.0], [0.0, c_sigma_um_per_s**2]]
        self._s_walk = s_walk_per_window
        self._c_walk = (c_walk_fraction, c_walk_min_um_per_s)
        self.updates = 0

    def update(self, *, growth_um: float, dt_s: float, gained_um: float, noise_um: float) -> None:
        """One window: predicted growth, its duration, the measured penetration gained, and that measure's noise."""
        if dt_s <= 0 or not all(math.isfinite(v) for v in (growth_um, gained_um, noise_um)):
            return
        p = self._p
        p[0][0] += self._s_walk**2
        p[1][1] += (self._c_walk[0] * abs(self.c_um_per_s) + self._c_walk[1]) ** 2  # creep decays: c may wander
        phi = (growth_um, dt_s)
        pphi = (p[0][0] * phi[0] + p[0][1] * phi[1], p[1][0] * phi[0] + p[1][1] * phi[1])
        innov_var = phi[0] * pphi[0] + phi[1] * pphi[1] + max(noise_um, 1e-6) ** 2
        gain = (pphi[0] / innov_var, pphi[1] / innov_var)
        innov = gained_um - (self.s * phi[0] + self.c_um_per_s * phi[1])
        self.s += gain[0] * innov
        self.c_um_per_s += gain[1] * innov
        self._p = [
            [p[0][0] - gain[0] * pphi[0], p[0][1] - gain[0] * pphi[1]],
            [p[1][0] - gain[1] * pphi[0], p[1][1] - gain[1] * pphi[1]],
        ]
        lo, hi = self.s_bounds
        self.s = min(max(self.s, lo), hi)
        self.c_um_per_s = min(max(self.c_um_per_s, -self.c_bound_um_per_s), self.c_bound_um_per_s)
        self.updates += 1

    def predict_um(self, growth_um: float, dt_s: float) -> float:
        """Penetration the stack will gain from this growth over `dt_s`."""
        return self.s * growth_um + self.c_um_per_s * dt_s


# ------------------------------------------------------------------------------------------------ the law


@dataclass(frozen=True)
class LawSettings:
    """Tuning of `PressureLaw`; defaults suit a 0.625 µm/pulse press on a Ø10–16 mm electrode."""

    um_per_pulse: float = 0.625
    k_min_n_per_um: float = 5e-4
    k_max_n_per_um: float = 0.4
    k_initial_n_per_um: float | None = None  # None: start from k_max (smallest first moves)
    gain: float = 0.35
    max_step_force_n: float = 1.2  # per-cycle force change the move limit allows (≈ 10 kPa on Ø12 mm)
    max_step_um: float = math.inf  # what the press can travel in one period
    stiffness_safety: float = 2.0
    stiffness_memory_n2: float = 20.0
    stiffness_prior_um2: float = 1.0
    learn_above_n: float = 0.2  # learn stiffness only in contact
    settle_readings: int = 3
    window_max_readings: int = 10
    noise_floor_n: float = 0.001
    deadband_pulse_fraction: float = 0.55
    deadband_noise_sigmas: float = 3.0
    hunt_window_steps: int = 10
    hunt_widen: float = 1.25
    hunt_max: float = 2.0
    hunt_relax_per_step: float = 0.998
    ff_window_s: float = 120.0
    ff_filter: float = 0.2

    def __post_init__(self) -> None:
        if not self.um_per_pulse > 0:
            raise ValueError("um_per_pulse must be > 0")
        if not 0 < self.gain <= 1:
            raise ValueError(f"gain must be in (0, 1], got {self.gain}")
        if not 0 < self.k_min_n_per_um <= self.k_max_n_per_um:
            raise ValueError("need 0 < k_min_n_per_um <= k_max_n_per_um")
        if not self.max_step_force_n > 0 or not self.max_step_um > 0:
            raise ValueError("max_step_force_n and max_step_um must be > 0")
        if not self.deadband_pulse_fraction > 0.5:
            raise ValueError("deadband_pulse_fraction must exceed 0.5, or one pulse can jump the band")


@dataclass(frozen=True)
class Move:
    """What the law decided for one cycle."""

    target_um: float
    pulses: int
    error_n: float
    deadband_n: float
    feedback_um: float
    feed_forward_um: float
    limited: bool  # the per-cycle move limit cut the feedback
    saturated: bool  # a travel limit cut the move (or the press sits at the limit pushing outwards)
    stiffness_n_per_um: float


class PressureLaw:
    """One decision per valid force reading; see the module docstring. Pure: the caller supplies everything."""

    def __init__(self, settings: LawSettings | None = None) -> None:
        self.settings = s = settings or LawSettings()
        self.gain = s.gain
        k0 = s.k_initial_n_per_um if s.k_initial_n_per_um is not None else s.k_max_n_per_um
        self.stiffness = StiffnessEstimator(
            k_initial=k0,
            k_min=s.k_min_n_per_um,
            k_max=s.k_max_n_per_um,
            prior_um2=s.stiffness_prior_um2,
            memory_n2=s.stiffness_memory_n2,
        )
        self.disturbance = DisturbanceEstimator()
        self.noise_n = s.noise_floor_n
        self._noise_var = s.noise_floor_n**2 * 6
        self._prev2: float | None = None
        self.hunt_factor = 1.0
        self.growth_total_um = 0.0  # cumulative predicted dense growth (unscaled)
        self._scaled_growth_um = 0.0  # cumulative predicted penetration gained (growth × s + drift)
        self._prev: tuple[float, float] | None = None  # (force, position) at the previous reading
        self._win: tuple[float, float] | None = None  # (x_net, force) at the window start
        self._win_readings = 0
        self._win_moved = False
        self._since_move = 1_000_000
        self._fb_history: deque[tuple[int, int]] = deque(maxlen=4)  # (step index, sign) of feedback moves
        self._step_index = 0
        self._ff_win: tuple[float, float, float, float, float] | None = None  # t, F̄, x, h, k at the start
        self._f_filt: float | None = None
        self._ff_win_dirty = False
        self._reference_n: float | None = None
        self._t_s: float | None = None

    # ---------------------------------------------------------------- settings

    def set_gain(self, gain: float) -> None:
        """Change the gain; bumpless: the increment law keeps no state that depends on it."""
        if not 0 < gain <= 1:
            raise ValueError(f"gain must be in (0, 1], got {gain}")
        self.gain = gain

    @property
    def stiffness_n_per_um(self) -> float:
        """Present stiffness estimate."""
        return self.stiffness.value

    def deadband_n(self) -> float:
        """Present deadband half-width (N)."""
        s = self.settings
        pulse_n = self.stiffness.value * s.um_per_pulse
        return self.hunt_factor * s.deadband_pulse_fraction * pulse_n + s.deadband_noise_sigmas * self.noise_n

    def move_limit_um(self, max_step_um: float | None = None) -> float:
        """Largest feedback move per cycle (µm); `max_step_um` overrides the travel-per-period setting."""
        s = self.settings
        travel = s.max_step_um if max_step_um is None else max_step_um
        return min(s.max_step_force_n / self.stiffness.upper(s.stiffness_safety), travel)

    def restart(self) -> None:
        """Forget the observation windows (after a gap in the data or a re-engage); keeps the estimates."""
        self._prev = None
        self._prev2 = None
        self._win = None
        self._win_readings = 0
        self._win_moved = False
        self._ff_win = None
        self._f_filt = None
        self._fb_history.clear()

    # ---------------------------------------------------------------- observing

    def observe(self, *, t_s: float, force_n: float, position_um: float, growth_um: float = 0.0) -> None:
        """Take one valid reading: `position_um` is the commanded position it was taken at, `growth_um` the
        predicted dense growth since the previous reading."""
        s = self.settings
        self._step_index += 1
        self._dt_s = 0.0 if self._t_s is None else max(0.0, t_s - self._t_s)
        self._growth_rate_um_per_s = growth_um / self._dt_s if self._dt_s > 0 else 0.0
        self.growth_total_um += growth_um
        self._scaled_growth_um += self.disturbance.predict_um(growth_um, self._dt_s)
        x_net = position_um + self._scaled_growth_um
        # noise: second differences of readings while the press rests (a steady drift cancels out)
        if self._prev is not None and self._prev2 is not None and self._since_move >= s.settle_readings + 1:
            d2 = force_n - 2 * self._prev[0] + self._prev2
            self._noise_var += 0.02 * (min(d2 * d2, 400 * self._noise_var) - self._noise_var)
            self.noise_n = min(max(math.sqrt(self._noise_var / 6), s.noise_floor_n), 20 * s.noise_floor_n)
        self._prev2 = self._prev[0] if self._prev is not None else None
        self._prev = (force_n, position_um)
        # stiffness: one window per move episode, closed once settled (or when long)
        if self._win is None or not self._win_moved:
            self._win = (x_net, force_n)
            self._win_readings = 0
        else:
            self._win_readings += 1
            if self._since_move >= s.settle_readings or self._win_readings >= s.window_max_readings:
                x0, f0 = self._win
                dx = x_net - x0
                if abs(dx) >= 0.5 * s.um_per_pulse and min(f0, force_n) > s.learn_above_n:
                    self.stiffness.update(dx, force_n - f0)
                self._win = (x_net, force_n)
                self._win_readings = 0
                self._win_moved = False
        self._since_move += 1
        self.hunt_factor = max(1.0, self.hunt_factor * s.hunt_relax_per_step)
        # disturbance: windows of ff_window_s on a filtered force, in contact and at a steady reference only
        self._f_filt = force_n if self._f_filt is None else self._f_filt + s.ff_filter * (force_n - self._f_filt)
        k = self.stiffness.value
        in_contact = force_n > s.learn_above_n
        if self._ff_win is None or not in_contact:
            self._ff_win = (t_s, self._f_filt, position_um, self.growth_total_um, k) if in_contact else None
            self._ff_win_dirty = False
        else:
            t0, f0, xw, h0, k0 = self._ff_win
            if t_s - t0 >= s.ff_window_s:
                if not self._ff_win_dirty:
                    k_mean = 0.5 * (k0 + k)
                    gained = (self._f_filt - f0) / k_mean - (position_um - xw)
                    noise_um = 2 * self.noise_n / k_mean + 0.5 * s.um_per_pulse  # noise and the ±½-pulse sawtooth
                    self.disturbance.update(
                        growth_um=self.growth_total_um - h0, dt_s=t_s - t0, gained_um=gained, noise_um=noise_um
                    )
                self._ff_win = (t_s, self._f_filt, position_um, self.growth_total_um, k)
                self._ff_win_dirty = False
        self._t_s = t_s

    # ---------------------------------------------------------------- deciding

    def decide(
        self,
        *,
        force_n: float,
        reference_n: float,
        position_um: float,
        lower_um: float,
        upper_um: float,
        feed_forward: bool = False,
        max_step_um: float | None = None,
    ) -> Move:
        """The move for this cycle (call `observe` with the same reading first). Pure: nothing is sent.

        With `feed_forward`, the penetration the stack is predicted to gain before the next reading (growth
        rate × s plus the drift c, over one period) is acted on now: the deadband test uses the predicted error,
        and the move gives that displacement back on top of the feedback.
        """
        s = self.settings
        p = s.um_per_pulse
        k = self.stiffness.value
        if self._reference_n is not None and reference_n != self._reference_n:
            self._ff_win_dirty = True  # a ramp moves the force on purpose: not a disturbance
        self._reference_n = reference_n
        error = reference_n - force_n
        if abs(error) > 2 * self.deadband_n():
            self._ff_win_dirty = True  # a transient, not the slow disturbance the window measures
        ff_um = 0.0
        if feed_forward:
            ff_um = -self.disturbance.predict_um(self._growth_rate_um_per_s * self._dt_s, self._dt_s)
        predicted_error = error + k * ff_um
        band = self.deadband_n()
        feedback_um = 0.0
        limited = False
        move_um = 0.0
        if abs(predicted_error) > band:
            feedback_um = self.gain * error / k
            move_um = feedback_um + ff_um
            if move_um * predicted_error <= 0 or abs(move_um) < p:
                move_um = math.copysign(p, predicted_error)
            limit = max(self.move_limit_um(max_step_um), p)
            if abs(move_um) > limit:
                move_um = math.copysign(limit, move_um)
                limited = True
        here = round(position_um / p)
        lo = math.ceil(lower_um / p - 1e-9)
        hi = math.floor(upper_um / p + 1e-9)
        wanted = here + _round_half_away(move_um / p)
        target = min(max(wanted, lo), hi)
        saturated = target != wanted or (error > band and here >= hi) or (error < -band and here <= lo)
        pulses = target - here
        if pulses:
            self._note_move(pulses, feedback=True)
        return Move(
            target_um=target * p,
            pulses=pulses,
            error_n=error,
            deadband_n=band,
            feedback_um=feedback_um if pulses else 0.0,
            feed_forward_um=ff_um,
            limited=limited,
            saturated=saturated,
            stiffness_n_per_um=k,
        )

    def step(
        self,
        *,
        t_s: float,
        force_n: float,
        reference_n: float,
        position_um: float,
        lower_um: float,
        upper_um: float,
        feed_forward: bool = False,
        growth_um: float = 0.0,
        max_step_um: float | None = None,
    ) -> Move:
        """`observe` then `decide` for one valid reading."""
        self.observe(t_s=t_s, force_n=force_n, position_um=position_um, growth_um=growth_um)
        return self.decide(
            force_n=force_n,
            reference_n=reference_n,
            position_um=position_um,
            lower_um=lower_um,
            upper_um=upper_um,
            feed_forward=feed_forward,
            max_step_um=max_step_um,
        )

    def note_external_move(self, pulses: int) -> None:
        """A move the law did not decide (approach, release) was commanded: count it for the estimators."""
        if pulses:
            self._note_move(pulses, feedback=False)

    def move_not_sent(self) -> None:
        """The last decided move could not be sent: drop the open windows, they would mislead the estimators."""
        self.restart()

    def _note_move(self, pulses: int, *, feedback: bool) -> None:
        s = self.settings
        self._win_moved = True
        self._since_move = 0
        if feedback:
            sign = 1 if pulses > 0 else -1
            if self._fb_history:
                last_step, last_sign = self._fb_history[-1]
                if last_sign != sign and self._step_index - last_step <= s.hunt_window_steps:
                    self.hunt_factor = min(self.hunt_factor * s.hunt_widen, s.hunt_max)
            self._fb_history.append((self._step_index, sign))
