"""The press axis driven by the stepper: trapezoidal moves evaluated in closed form on experiment time."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class _Segment:
    t0: float
    duration: float
    x0: float
    v0: float
    a: float

    def x(self, t: float) -> float:
        dt = min(max(t - self.t0, 0.0), self.duration)
        return self.x0 + self.v0 * dt + 0.5 * self.a * dt * dt

    def v(self, t: float) -> float:
        dt = min(max(t - self.t0, 0.0), self.duration)
        return self.v0 + self.a * dt

    @property
    def t_end(self) -> float:
        return self.t0 + self.duration


def _plan(t0: float, x0: float, v0: float, target: float, vmax: float, acc: float, dec: float) -> list[_Segment]:
    """Segments that take (x0, v0) to rest at `target` with limits vmax, acc, dec (all > 0)."""
    segs: list[_Segment] = []
    t, x, v = t0, x0, v0
    direction = 1.0 if target > x else -1.0
    # Moving the wrong way, or too fast to stop in time: brake to rest first, then plan from rest.
    stop_dist = v * v / (2 * dec)
    if v * direction < 0 or (v != 0 and abs(target - x) < stop_dist):
        dur = abs(v) / dec
        a = -math.copysign(dec, v)
        seg = _Segment(t, dur, x, v, a)
        segs.append(seg)
        t, x, v = seg.t_end, seg.x(seg.t_end), 0.0
        if abs(target - x) < 1e-9:
            return segs
        direction = 1.0 if target > x else -1.0
    dist = abs(target - x)
    s = abs(v)
    # Peak speed reachable: accelerate from s to vp then decelerate to 0 within dist.
    vp_sq = (2 * dist + s * s / acc) / (1 / acc + 1 / dec)
    vp = min(vmax, math.sqrt(max(vp_sq, s * s)))
    if vp < s:  # already faster than allowed: decelerate to vp (only happens when vmax was lowered)
        vp = s
    d_acc = (vp * vp - s * s) / (2 * acc)
    d_dec = vp * vp / (2 * dec)
    d_cruise = max(dist - d_acc - d_dec, 0.0)
    for dur, a_mag, dv in (((vp - s) / acc, acc, 1), (d_cruise / vp if vp > 0 else 0.0, 0.0, 0), (vp / dec, dec, -1)):
        if dur <= 0:
            continue
        a = direction * a_mag * dv
        seg = _Segment(t, dur, x, v, a)
        segs.append(seg)
        t, x, v = seg.t_end, seg.x(seg.t_end), seg.v(seg.t_end)
        s = abs(v)
    # Snap the end exactly onto the target (rounding in the closed form).
    if segs:
        last = segs[-1]
        err = target - last.x(last.t_end)
        segs.append(_Segment(last.t_end, 0.0, last.x(last.t_end) + err, 0.0, 0.0))
    return segs


class Axis:
    """Drive counter and platen position in pulses. Positive closes the press."""

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self._x_cmd = 0.0  # commanded (counter) position, continuous pulses
        self._t = 0.0
        self.actual_pulses = 0.0  # where the platen really is, in pulses
        self.lost_steps_fraction = 0.0
        self.stalled = False  # set by the model when the force exceeds the motor's stall force

    @property
    def counter_pulses(self) -> int:
        """The drive's position counter (pulses it has issued)."""
        return round(self._x_cmd)

    @property
    def moving(self) -> bool:
        """True while a profile is being executed."""
        return bool(self._segments) and self._t < self._segments[-1].t_end

    @property
    def velocity_pps(self) -> float:
        """Commanded velocity now."""
        return self._velocity(self._t)

    def _velocity(self, t: float) -> float:
        for seg in self._segments:
            if seg.t0 <= t < seg.t_end:
                return seg.v(t)
        return 0.0

    def _position(self, t: float) -> float:
        if not self._segments:
            return self._x_cmd
        for seg in self._segments:
            if t < seg.t_end:
                return seg.x(t)
        last = self._segments[-1]
        return last.x(last.t_end)

    def advance_to(self, t: float) -> float:
        """Move time to `t`; returns the platen displacement (actual pulses) this caused."""
        if t <= self._t:
            return 0.0
        x_new = self._position(t)
        delta_cmd = x_new - self._x_cmd
        self._x_cmd = x_new
        self._t = t
        if self._segments and t >= self._segments[-1].t_end:
            self._segments = []
        moved = delta_cmd * (1.0 - self.lost_steps_fraction)
        if self.stalled and moved > 0:
            moved = 0.0  # the motor cannot push further: steps are lost
        self.actual_pulses += moved
        return moved

    def start_move(self, target_pulses: int, *, velocity_pps: float, accel_pps2: float, decel_pps2: float) -> None:
        """Start a trapezoidal move of the counter to `target_pulses` from the present state."""
        if velocity_pps <= 0 or accel_pps2 <= 0 or decel_pps2 <= 0:
            raise ValueError("velocity, acceleration and deceleration must be > 0")
        v0 = self._velocity(self._t)
        self._segments = _plan(self._t, self._x_cmd, v0, float(target_pulses), velocity_pps, accel_pps2, decel_pps2)

    def stop(self, *, decel_pps2: float | None = None) -> None:
        """Decelerate to rest (at once when `decel_pps2` is None: an emergency stop)."""
        v0 = self._velocity(self._t)
        if decel_pps2 is None or v0 == 0:
            self._segments = []
            self._x_cmd = float(round(self._x_cmd))
            return
        dur = abs(v0) / decel_pps2
        self._segments = [_Segment(self._t, dur, self._x_cmd, v0, -math.copysign(decel_pps2, v0))]

    def set_counter(self, pulses: int) -> None:
        """Re-define the counter (homing / 'set current position = 0'); the platen does not move."""
        self._segments = []
        self._x_cmd = float(pulses)
