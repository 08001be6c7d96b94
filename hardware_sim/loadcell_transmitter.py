"""The RS-485 Modbus RTU load-cell transmitter (devices.md §1), as a slave for `RtuLineServer`.

Register map (holding registers, FC03 reads, FC16 writes; int32 = two registers, high word first, two's
complement): 0x0004 response delay ms; 0x0005 lock (0x5AA5 unlocks, any other value locks; reads 0x5AA5 while
unlocked); 0x0006 firmware; 0x0008 status; 0x001E-0x001F measured (displayed) value = net; 0x0020 ADC speed
code; 0x0022/0x0023 filter type/strength; 0x002C-0x002D raw ADC code; 0x0050-0x0051 gross; 0x0052-0x0053 net;
0x0054-0x0055 tare (0x7FFFFFFF = tare now); 0x0056-0x0057 capacity and 0x0058-0x0059 division, in display
counts; 0x005E execute zero (0x00FF); 0x0060/0x0061 zero-tracking range/time; 0x0062/0x0063 stability
band/time; 0x0066/0x0067 creep-tracking range/time.

Choices where devices.md is silent (the simulator's own, documented here):

- Ranges and bands are in divisions (d); times are in 0.1 s units (10 = 1 s).
- Configuration writes while locked are acknowledged with the normal echo and IGNORED (the dangerous kind of
  device: only a read-back shows the write did nothing). `locked_write="exception"` answers exception 04 instead.
  Tare and zero count as configuration. Writing 0x0005 never needs the unlock.
- FC06 is not supported (exception 01): devices.md lists FC16 for writes. `function_codes` can widen this.
- An int32 register must be written as a whole (both words in one FC16), else exception 02; read-only
  registers answer exception 02 to writes; a read range touching an unmapped register answers exception 02.
- Filter type 0 = off, 1-3 = first-order low-pass with a = 1/(1 + strength) per conversion. Between reads the
  n conversions are applied in closed form, y += (1 - (1 - a)^n)(x - y), where x is the mean of
  min(n, (2 - a)/a) fresh samples, so the filtered noise has the steady-state variance of a real EMA.
- Zero tracking: while the gross reading is within ±range d of zero and stable, after `time` it is pulled to zero.
- Creep tracking: a change of the gross reading slower than `range` d per `time` is cancelled by moving the
  zero. The device checks the reading at every read; over a longer gap between reads it assumes the change was
  a steady ramp (it cannot know better).
- Stability: unstable (b5) until the reading stayed within ±band d for `time`; band 0 = always stable. Over a
  gap between reads a change is taken to have happened just after the previous read.
- Status: b7 "at zero" when the gross reading is 0; b3 when the displayed (net) value is negative; b9 when
  |force| > 1.1 x capacity or the `overload` fault; b6 when the ADC code clips (at 2 x capacity by default) or
  a value leaves int32 (then pinned to the int32 limit); `status_extra_bits` (default 0x0800, as in the
  devices.md vector 0x0802) are always set.
- Zero (0x005E) is accepted at any load; no power-on zero unless `power_on_zero=True` (then b4 is set).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

from hardware_sim.faults import LOADCELL_FAULTS, Faults
from hardware_sim.model import RigModel
from hardware_sim.rtu_line import ILLEGAL_ADDRESS, ILLEGAL_VALUE, SLAVE_FAILURE, ModbusError

__all__ = ["DEFAULT_ADC_RATES_SPS", "LoadCellTransmitter"]

DEFAULT_ADC_RATES_SPS: tuple[float, ...] = (10.0, 20.0, 40.0, 80.0, 120.0, 160.0, 320.0, 640.0, 1280.0)

UNLOCK_CODE = 0x5AA5
TARE_NOW = 0x7FFFFFFF
ZERO_NOW = 0x00FF
_INT32_MAX = 0x7FFFFFFF
_INT32_MIN = -0x80000000
_ADC_MAX = (1 << 23) - 1
_VALID_DIVISIONS = frozenset({1, 2, 5, 10, 20, 50, 100})
_MAX_FILTER_SAMPLES = 128

REG_RESPONSE_DELAY = 0x0004
REG_LOCK = 0x0005
REG_FIRMWARE = 0x0006
REG_STATUS = 0x0008
REG_MEASURED = 0x001E
REG_ADC_SPEED = 0x0020
REG_FILTER_TYPE = 0x0022
REG_FILTER_STRENGTH = 0x0023
REG_RAW_ADC = 0x002C
REG_GROSS = 0x0050
REG_NET = 0x0052
REG_TARE = 0x0054
REG_CAPACITY = 0x0056
REG_DIVISION = 0x0058
REG_ZERO = 0x005E
REG_ZERO_TRACK_RANGE = 0x0060
REG_ZERO_TRACK_TIME = 0x0061
REG_STABLE_BAND = 0x0062
REG_STABLE_TIME = 0x0063
REG_CREEP_RANGE = 0x0066
REG_CREEP_TIME = 0x0067

_INT32_REGS = (REG_MEASURED, REG_RAW_ADC, REG_GROSS, REG_NET, REG_TARE, REG_CAPACITY, REG_DIVISION)
_MEASUREMENT_REGS = frozenset(
    {REG_STATUS, *(r for base in (REG_MEASURED, REG_RAW_ADC, REG_GROSS, REG_NET) for r in (base, base + 1))}
)

STATUS_SIGN = 1 << 3
STATUS_POWER_ON_ZEROED = 1 << 4
STATUS_UNSTABLE = 1 << 5
STATUS_OVERFLOW = 1 << 6
STATUS_AT_ZERO = 1 << 7
STATUS_OVERLOAD = 1 << 9


def _words(value: int) -> tuple[int, int]:
    u = value & 0xFFFFFFFF
    return u >> 16, u & 0xFFFF


def _int32(high: int, low: int) -> int:
    u = (high << 16) | low
    return u - (1 << 32) if u & 0x80000000 else u


def _clamp_int32(value: int) -> tuple[int, bool]:
    if value > _INT32_MAX:
        return _INT32_MAX, True
    if value < _INT32_MIN:
        return _INT32_MIN, True
    return value, False


def _ignored() -> None:
    """A configuration write swallowed by the lock."""


class LoadCellTransmitter:
    """A Modbus RTU load-cell transmitter reading the rig model's load cell; factory tracking ON."""

    def __init__(
        self,
        model: RigModel,
        *,
        slave_id: int = 1,
        capacity_n: float = 100.0,
        decimals: int = 3,
        unit_per_newton: float = 1.0,
        division: int = 1,
        firmware: int = 0x0102,
        channel: str = "loadcell",
        adc_rates_sps: Sequence[float] = DEFAULT_ADC_RATES_SPS,
        adc_speed_code: int = 4,
        filter_type: int = 1,
        filter_strength: int = 5,
        zero_tracking_range_d: int = 2,
        zero_tracking_time_ds: int = 10,
        stability_band_d: int = 5,
        stability_time_ds: int = 5,
        creep_tracking_range_d: int = 5,
        creep_tracking_time_ds: int = 10,
        response_delay_ms: int = 0,
        adc_zero_code: int = 12_000,
        adc_full_scale_capacities: float = 2.0,
        power_on_zero: bool = False,
        locked_write: Literal["ignore", "exception"] = "ignore",
        status_extra_bits: int = 0x0800,
        function_codes: frozenset[int] = frozenset({0x03, 0x10}),
    ) -> None:
        if not 0 <= decimals <= 7:
            raise ValueError(f"decimals must be 0..7, got {decimals}")
        if capacity_n <= 0 or unit_per_newton <= 0:
            raise ValueError("capacity_n and unit_per_newton must be > 0")
        if not 0 <= adc_speed_code < len(adc_rates_sps):
            raise ValueError(f"adc_speed_code {adc_speed_code} is not in the rate table of {len(adc_rates_sps)}")
        self.model = model
        self.slave_id = slave_id
        self.faults = Faults(supported=LOADCELL_FAULTS)
        self.function_codes = function_codes
        self.channel = channel
        self.decimals = decimals
        self.unit_per_newton = unit_per_newton
        self.capacity_n = capacity_n
        self.division = division
        self.firmware = firmware
        self.adc_rates_sps = tuple(adc_rates_sps)
        self.adc_speed_code = adc_speed_code
        self.filter_type = filter_type
        self.filter_strength = filter_strength
        self.zero_tracking_range_d = zero_tracking_range_d
        self.zero_tracking_time_ds = zero_tracking_time_ds
        self.stability_band_d = stability_band_d
        self.stability_time_ds = stability_time_ds
        self.creep_tracking_range_d = creep_tracking_range_d
        self.creep_tracking_time_ds = creep_tracking_time_ds
        self.response_delay_ms = response_delay_ms
        self.adc_zero_code = adc_zero_code
        self.adc_counts_per_n = (_ADC_MAX - abs(adc_zero_code)) / (capacity_n * adc_full_scale_capacities)
        self.power_on_zero = power_on_zero
        self.locked_write = locked_write
        self.status_extra_bits = status_extra_bits
        self.locked = True
        self.tare_counts = 0
        self.power_on_zeroed = False
        self.ignored_writes = 0  # write requests acknowledged but ignored (in part) while locked
        # measurement state (display counts, float, before rounding to the division)
        self._t_last: float | None = None
        self._conv_carry = 0.0
        self._y = 0.0  # filtered reading relative to the factory calibration zero
        self._zero = 0.0
        self._raw_adc = adc_zero_code
        self._adc_clipped = False
        self._stab_anchor = 0.0
        self._stab_t0 = 0.0
        self._creep_anchor = 0.0
        self._creep_t0 = 0.0
        self._zt_held_s = 0.0
        self._stuck: dict[int, int] | None = None
        self._factory_tracking = (
            zero_tracking_range_d,
            zero_tracking_time_ds,
            creep_tracking_range_d,
            creep_tracking_time_ds,
        )
        self.update()  # power-up: the first conversions (and the power-on zero, when enabled)

    # ----------------------------------------------------------- protocol
    def power_cycle(self) -> None:
        """Power lost and back: zero and creep tracking return to their factory settings and the configuration
        is locked again (a host must turn tracking off again before it trusts the readings)."""
        (
            self.zero_tracking_range_d,
            self.zero_tracking_time_ds,
            self.creep_tracking_range_d,
            self.creep_tracking_time_ds,
        ) = self._factory_tracking
        self.locked = True

    def response_delay_s(self) -> float:
        """The configured turnaround (register 0x0004) in seconds."""
        return self.response_delay_ms / 1000.0

    def read_registers(self, address: int, count: int) -> list[int]:
        """Holding registers `address`..`address+count-1` after bringing the measurement up to date."""
        self.update()
        regs = self._registers()
        missing = [a for a in range(address, address + count) if a not in regs]
        if missing:
            raise ModbusError(ILLEGAL_ADDRESS, f"register 0x{missing[0]:04X} is not mapped")
        if self.faults.stuck:
            if self._stuck is None:
                self._stuck = {a: regs[a] for a in _MEASUREMENT_REGS}
            regs.update(self._stuck)
        else:
            self._stuck = None
        if self.faults.spike_n and address <= REG_GROSS < address + count:  # one reading only (an EMI spike)
            spiked, _ = _clamp_int32(
                _int32(regs[REG_GROSS], regs[REG_GROSS + 1]) + round(self.faults.spike_n * self._counts_per_n())
            )
            regs[REG_GROSS], regs[REG_GROSS + 1] = _words(spiked)
            self.faults.spike_n = 0.0
        return [regs[a] for a in range(address, address + count)]

    def write_registers(self, address: int, values: Sequence[int]) -> None:
        """Write registers; every register is checked before any is applied (all or nothing)."""
        self.update()
        actions: list[Callable[[], None]] = []
        i = 0
        while i < len(values):
            reg = address + i
            if reg in _INT32_REGS or reg - 1 in _INT32_REGS:
                if reg not in _INT32_REGS or i + 1 >= len(values):
                    raise ModbusError(ILLEGAL_ADDRESS, f"int32 at 0x{reg & ~1:04X} must be written whole")
                actions.append(self._plan_int32(reg, _int32(values[i], values[i + 1])))
                i += 2
            else:
                actions.append(self._plan_word(reg, values[i]))
                i += 1
        if _ignored in actions:
            self.ignored_writes += 1
        for action in actions:
            action()

    # ------------------------------------------------------------ writes
    def _config(self, apply: Callable[[], None]) -> Callable[[], None]:
        """Wrap a configuration change so that it honours the lock."""
        if not self.locked:
            return apply
        if self.locked_write == "exception":
            raise ModbusError(SLAVE_FAILURE, "configuration is locked; write 0x5AA5 to 0x0005 first")

        return _ignored

    def _plan_word(self, reg: int, value: int) -> Callable[[], None]:
        def setter(name: str, lo: int, hi: int) -> Callable[[], None]:
            if not lo <= value <= hi:
                raise ModbusError(ILLEGAL_VALUE, f"0x{reg:04X} takes {lo}..{hi}, got {value}")
            return self._config(lambda: setattr(self, name, value))

        if reg == REG_LOCK:
            return lambda: setattr(self, "locked", value != UNLOCK_CODE)
        if reg == REG_RESPONSE_DELAY:
            return setter("response_delay_ms", 0, 1000)
        if reg == REG_ADC_SPEED:
            return setter("adc_speed_code", 0, len(self.adc_rates_sps) - 1)
        if reg == REG_FILTER_TYPE:
            return setter("filter_type", 0, 3)
        if reg == REG_FILTER_STRENGTH:
            return setter("filter_strength", 0, 50)
        if reg == REG_ZERO_TRACK_RANGE:
            return setter("zero_tracking_range_d", 0, 0xFFFF)
        if reg == REG_ZERO_TRACK_TIME:
            return setter("zero_tracking_time_ds", 0, 0xFFFF)
        if reg == REG_STABLE_BAND:
            return setter("stability_band_d", 0, 0xFFFF)
        if reg == REG_STABLE_TIME:
            return setter("stability_time_ds", 0, 0xFFFF)
        if reg == REG_CREEP_RANGE:
            return setter("creep_tracking_range_d", 0, 0xFFFF)
        if reg == REG_CREEP_TIME:
            return setter("creep_tracking_time_ds", 0, 0xFFFF)
        if reg == REG_ZERO:
            if value != ZERO_NOW:
                raise ModbusError(ILLEGAL_VALUE, f"0x005E takes 0x00FF (zero), got 0x{value:04X}")
            return self._config(self.execute_zero)
        raise ModbusError(ILLEGAL_ADDRESS, f"register 0x{reg:04X} is not writable")

    def _plan_int32(self, reg: int, value: int) -> Callable[[], None]:
        if reg == REG_TARE:
            if value == TARE_NOW:
                return self._config(self.tare_now)
            return self._config(lambda: setattr(self, "tare_counts", value))
        if reg == REG_CAPACITY:
            if value <= 0:
                raise ModbusError(ILLEGAL_VALUE, f"capacity must be > 0 counts, got {value}")
            return self._config(lambda: setattr(self, "capacity_n", value / self._counts_per_n()))
        if reg == REG_DIVISION:
            if value not in _VALID_DIVISIONS:
                raise ModbusError(ILLEGAL_VALUE, f"division must be one of {sorted(_VALID_DIVISIONS)}")
            return self._config(lambda: setattr(self, "division", value))
        raise ModbusError(ILLEGAL_ADDRESS, f"register 0x{reg:04X} is read-only")

    # --------------------------------------------------------- commands
    def tare_now(self) -> None:
        """Take the present gross reading as the tare."""
        self.tare_counts = self._gross()

    def execute_zero(self) -> None:
        """Make the present reading the zero."""
        self._zero = self._y
        self._reset_trackers(0.0)

    # ------------------------------------------------------ measurement
    def _counts_per_n(self) -> float:
        return self.unit_per_newton * 10**self.decimals

    @property
    def sample_rate_sps(self) -> float:
        """ADC conversions per second for the present speed code."""
        return self.adc_rates_sps[self.adc_speed_code]

    @property
    def zero_offset_counts(self) -> float:
        """How far the zero has moved from the calibration zero (display counts), by zeroing or tracking."""
        return self._zero

    def _alpha(self) -> float:
        return 1.0 if self.filter_type == 0 else 1.0 / (1.0 + self.filter_strength)

    def _sample_counts(self, n_conversions: int) -> float:
        """Mean of fresh sensor samples standing in for `n_conversions` ADC conversions, in display counts."""
        a = self._alpha()
        k = max(1, min(n_conversions, round((2.0 - a) / a), _MAX_FILTER_SAMPLES))
        force_n = sum(self.model.sensor_force_n(self.channel) for _ in range(k)) / k
        raw = self.adc_zero_code + force_n * self.adc_counts_per_n
        self._adc_clipped = not -_ADC_MAX - 1 <= raw <= _ADC_MAX
        raw = min(max(raw, -_ADC_MAX - 1), _ADC_MAX)
        self._raw_adc = round(raw)
        return (raw - self.adc_zero_code) / self.adc_counts_per_n * self._counts_per_n()

    def _reset_trackers(self, v: float) -> None:
        t = self._t_last if self._t_last is not None else 0.0
        self._stab_anchor = self._creep_anchor = v
        self._stab_t0 = self._creep_t0 = t
        self._zt_held_s = 0.0

    def update(self) -> None:
        """Run the ADC, filter, stability detection and zero/creep tracking up to the model's clock."""
        now = self.model.clock.now()
        if self._t_last is None:
            self._y = self._sample_counts(_MAX_FILTER_SAMPLES)
            self._t_last = now
            if self.power_on_zero:
                self._zero = self._y
                self.power_on_zeroed = True
            self._reset_trackers(self._y - self._zero)
            return
        t_prev = self._t_last
        dt = now - t_prev
        if dt <= 0:
            return
        n_real = dt * self.sample_rate_sps + self._conv_carry
        n = math.floor(n_real)
        self._conv_carry = n_real - n
        self._t_last = now
        if n > 0:
            x = self._sample_counts(n)
            self._y += (1.0 - (1.0 - self._alpha()) ** n) * (x - self._y)
        self._track(now, t_prev)

    def _track(self, now: float, t_prev: float) -> None:
        d = self.division
        dt = now - t_prev
        v = self._y - self._zero
        # stability detection: a change seen now happened at the latest just after the previous read
        if abs(v - self._stab_anchor) > self.stability_band_d * d:
            self._stab_anchor, self._stab_t0 = v, t_prev
        # creep tracking: cancel changes slower than range d per time
        c_range, c_time_s = self.creep_tracking_range_d * d, self.creep_tracking_time_ds / 10.0
        if c_range > 0 and c_time_s > 0:
            dv, span = v - self._creep_anchor, now - self._creep_t0
            if span >= c_time_s:
                if abs(dv) <= c_range * span / c_time_s:
                    self._zero += dv
                    v -= dv
                else:
                    self._creep_anchor = v
                self._creep_t0 = now
            elif abs(dv) > c_range:
                self._creep_anchor, self._creep_t0 = v, now
        # auto zero tracking: pull a stable reading near zero to zero
        z_range, z_time_s = self.zero_tracking_range_d * d, self.zero_tracking_time_ds / 10.0
        if z_range > 0 and z_time_s > 0 and abs(v) <= z_range and self.stable:
            self._zt_held_s += dt
            if self._zt_held_s >= z_time_s:
                self._zero += v
                self._creep_anchor -= v
                self._stab_anchor -= v
                self._zt_held_s = 0.0
        else:
            self._zt_held_s = 0.0

    @property
    def stable(self) -> bool:
        """True when the reading stayed within the stability band for the stability time."""
        if self.stability_band_d == 0 or self._t_last is None:
            return True
        return self._t_last - self._stab_t0 >= self.stability_time_ds / 10.0

    def _gross_float(self) -> float:
        return self._y - self._zero

    def _gross(self) -> int:
        d = self.division
        return round(self._gross_float() / d) * d

    def _registers(self) -> dict[int, int]:
        gross, gross_over = _clamp_int32(self._gross())
        net, net_over = _clamp_int32(gross - self.tare_counts)
        force_n = self._y / self._counts_per_n()
        status = (self.decimals & 0x7) | self.status_extra_bits
        if net < 0:
            status |= STATUS_SIGN
        if self.power_on_zeroed:
            status |= STATUS_POWER_ON_ZEROED
        if not self.stable:
            status |= STATUS_UNSTABLE
        if self._adc_clipped or gross_over or net_over:
            status |= STATUS_OVERFLOW
        if gross == 0:
            status |= STATUS_AT_ZERO
        if self.faults.overload or abs(force_n) > 1.1 * self.capacity_n:
            status |= STATUS_OVERLOAD
        capacity, _ = _clamp_int32(round(self.capacity_n * self._counts_per_n()))
        regs = {
            REG_RESPONSE_DELAY: self.response_delay_ms,
            REG_LOCK: 0 if self.locked else UNLOCK_CODE,
            REG_FIRMWARE: self.firmware,
            REG_STATUS: status & 0xFFFF,
            REG_ADC_SPEED: self.adc_speed_code,
            REG_FILTER_TYPE: self.filter_type,
            REG_FILTER_STRENGTH: self.filter_strength,
            REG_ZERO: 0,
            REG_ZERO_TRACK_RANGE: self.zero_tracking_range_d,
            REG_ZERO_TRACK_TIME: self.zero_tracking_time_ds,
            REG_STABLE_BAND: self.stability_band_d,
            REG_STABLE_TIME: self.stability_time_ds,
            REG_CREEP_RANGE: self.creep_tracking_range_d,
            REG_CREEP_TIME: self.creep_tracking_time_ds,
        }
        for reg, value in (
            (REG_MEASURED, net),
            (REG_RAW_ADC, self._raw_adc),
            (REG_GROSS, gross),
            (REG_NET, net),
            (REG_TARE, self.tare_counts),
            (REG_CAPACITY, capacity),
            (REG_DIVISION, self.division),
        ):
            regs[reg], regs[reg + 1] = _words(value)
        return regs
