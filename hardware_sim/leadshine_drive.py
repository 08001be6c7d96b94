"""The Leadshine RS-485 Modbus stepper drive in PR (path) mode (devices.md §3), as a slave for `RtuLineServer`.

It moves the rig model's press axis (`model.axis`). FC03 reads, FC06 and FC16 writes; int32 = two registers,
high word first. Registers: 0x6200-0x6207 the PR0 block (0x6200 mode 0x0001 absolute / 0x0041 relative /
0x0002 velocity, 0x6201/0x6202 target pulses, 0x6203 velocity rpm, accel/decel in ms per 1000 rpm at the
configurable `accel_register`/`decel_register`, 0x6204/0x6205 by default); 0x6002 trigger (0x0010 run PR0,
0x0020 homing, 0x0021 set current position = 0, 0x0040 emergency stop); 0x602C-0x602D position counter;
0x1003 motion status; 0x2203 alarm code; 0x1801 control word (0x1111 alarm reset, 0x2211 save to EEPROM);
0x6000 limit control (0x0002 enables the software limits); 0x6006-0x6007 + limit, 0x6008-0x6009 − limit.

Choices where devices.md is silent (the simulator's own, documented here):

- Software limits: a move whose target lies beyond an enabled limit is clamped and stops AT the limit, with no
  alarm (`last_move_clamped` records it); a move from beyond a limit further outwards does not move at all.
  Velocity mode runs to the limit when limits are enabled. Homing ignores the limits.
- Emergency stop (0x0040) stops at once; afterwards "command done" (b4) is set and "path done" (b5) is not.
- Reading 0x6002 gives the trigger word of the motion in progress, 0x0000 when idle.
- Homing drives the platen to a home switch at platen position 0 at `homing_rpm`, then zeroes the counter
  (the switch stops the platen exactly, so lost steps do not spoil homing); b6 is set when done.
- Alarms latch: fault bit b0 set, enabled bit b1 cleared, motion stopped, run and homing triggers ignored
  (acknowledged, `ignored_triggers` counts them). 0x1111 clears the latch; an `alarm_code` fault still set
  raises its alarm again at once (the cause persists).
- `closed_loop=True` (a CL57RS-class drive) raises alarm 0x0180 when the platen (encoder) differs from the
  counter by more than `position_error_limit_pulses`; the check runs whenever the drive is accessed. An
  open-loop drive (the default) loses steps silently. Alarm reset re-synchronises counter and encoder.
- Unknown control words, PR0 modes or trigger words answer exception 03; writes to read-only registers and
  reads of unmapped registers answer exception 02.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hardware_sim.faults import STEPPER_FAULTS, Faults
from hardware_sim.model import RigModel
from hardware_sim.rtu_line import ILLEGAL_ADDRESS, ILLEGAL_VALUE, ModbusError

__all__ = ["LeadshineDrive"]

REG_STATUS = 0x1003
REG_CONTROL = 0x1801
REG_ALARM = 0x2203
REG_LIMIT_CONTROL = 0x6000
REG_TRIGGER = 0x6002
REG_LIMIT_POS = 0x6006
REG_LIMIT_NEG = 0x6008
REG_POSITION = 0x602C
REG_PR0 = 0x6200
REG_PR0_MODE = 0x6200
REG_PR0_TARGET = 0x6201
REG_PR0_VELOCITY = 0x6203

MODE_ABSOLUTE = 0x0001
MODE_RELATIVE = 0x0041
MODE_VELOCITY = 0x0002
_MODES = frozenset({0x0000, MODE_ABSOLUTE, MODE_RELATIVE, MODE_VELOCITY})

TRIGGER_RUN_PR0 = 0x0010
TRIGGER_HOMING = 0x0020
TRIGGER_SET_ZERO = 0x0021
TRIGGER_ESTOP = 0x0040

CONTROL_RESET_ALARM = 0x1111
CONTROL_SAVE_EEPROM = 0x2211

LIMITS_ENABLE = 0x0002
ALARM_POSITION_ERROR = 0x0180

STATUS_FAULT = 1 << 0
STATUS_ENABLED = 1 << 1
STATUS_RUNNING = 1 << 2
STATUS_COMMAND_DONE = 1 << 4
STATUS_PATH_DONE = 1 << 5
STATUS_HOMING_DONE = 1 << 6

_INT32_MAX = 0x7FFFFFFF
_INT32_MIN = -0x80000000


def _words(value: int) -> tuple[int, int]:
    u = value & 0xFFFFFFFF
    return u >> 16, u & 0xFFFF


def _int32(high: int, low: int) -> int:
    u = (high << 16) | low
    return u - (1 << 32) if u & 0x80000000 else u


def _int16(word: int) -> int:
    return word - 0x10000 if word & 0x8000 else word


class LeadshineDrive:
    """A Leadshine RS-485 stepper drive in PR mode moving the model's press axis."""

    def __init__(
        self,
        model: RigModel,
        *,
        slave_id: int = 2,
        pulses_per_rev: int = 3200,
        accel_register: int = 0x6204,
        decel_register: int = 0x6205,
        closed_loop: bool = False,
        position_error_limit_pulses: int = 400,
        homing_rpm: int = 60,
        response_delay_ms: float = 0.0,
        velocity_rpm: int = 60,
        accel_ms_per_krpm: int = 100,
        decel_ms_per_krpm: int = 100,
    ) -> None:
        if pulses_per_rev <= 0:
            raise ValueError(f"pulses_per_rev must be > 0, got {pulses_per_rev}")
        self.model = model
        self.slave_id = slave_id
        self.faults = Faults(supported=STEPPER_FAULTS)
        self.pulses_per_rev = pulses_per_rev
        self.accel_register = accel_register
        self.decel_register = decel_register
        self.closed_loop = closed_loop
        self.position_error_limit_pulses = position_error_limit_pulses
        self.homing_rpm = homing_rpm
        self.response_delay_ms = response_delay_ms
        self.pr0: dict[int, int] = {reg: 0 for reg in range(REG_PR0, REG_PR0 + 8)}
        self.pr0.update({accel_register: accel_ms_per_krpm, decel_register: decel_ms_per_krpm})
        self.pr0[REG_PR0_MODE] = MODE_ABSOLUTE
        self.pr0[REG_PR0_VELOCITY] = velocity_rpm
        self.limit_control = 0
        self.limit_words = {REG_LIMIT_POS: 0, REG_LIMIT_POS + 1: 0, REG_LIMIT_NEG: 0, REG_LIMIT_NEG + 1: 0}
        self.eeprom_writes = 0  # 0x2211 "save to EEPROM" commands received (flash wear)
        self.ignored_triggers = 0  # run/homing triggers refused because an alarm was active
        self.last_move_clamped = False  # the last PR0 target was clamped to a software limit
        self.runs_executed = 0  # run-PR0 triggers the drive acted on (the judge of duplicated moves)
        # (mode, target pulses, software limits enabled) of every executed run, in order
        self.run_log: list[tuple[int, int, bool]] = []
        self._alarm = 0
        self._encoder_offset = 0.0  # counter minus platen (pulses) when they were last synchronised
        self._active_trigger = 0
        self._homing = False
        self._command_done = True
        self._path_done = True
        self._homing_done = False
        self._applied_lost_fraction = 0.0
        self._stuck: dict[int, int] | None = None

    # ------------------------------------------------------------ state
    @property
    def alarm_code(self) -> int:
        """The latched alarm (0 = none)."""
        return self._alarm

    @property
    def position_error_pulses(self) -> float:
        """Counter minus platen (encoder) since they were last synchronised, in pulses."""
        axis = self.model.axis
        return axis.counter_pulses - axis.actual_pulses - self._encoder_offset

    @property
    def limits_enabled(self) -> bool:
        """True when the software limits are enabled."""
        return bool(self.limit_control & LIMITS_ENABLE)

    @property
    def limits_pulses(self) -> tuple[int, int]:
        """(negative, positive) software limits in pulses."""
        w = self.limit_words
        return (
            _int32(w[REG_LIMIT_NEG], w[REG_LIMIT_NEG + 1]),
            _int32(w[REG_LIMIT_POS], w[REG_LIMIT_POS + 1]),
        )

    def _pps(self, rpm: float) -> float:
        return rpm / 60.0 * self.pulses_per_rev

    def _acc_pps2(self, ms_per_krpm: int) -> float:
        return self._pps(1000.0) / (max(ms_per_krpm, 1) / 1000.0)

    def _raise_alarm(self, code: int) -> None:
        self._alarm = code
        self.model.axis.stop()
        self._homing = False
        self._active_trigger = 0
        self._command_done = True

    def _resync_encoder(self) -> None:
        axis = self.model.axis
        self._encoder_offset = axis.counter_pulses - axis.actual_pulses

    def sync(self) -> None:
        """Bring the drive up to the model's clock: faults, alarms, end of motion, homing."""
        axis = self.model.axis
        if self.faults.lost_steps_fraction != self._applied_lost_fraction:
            axis.lost_steps_fraction = self.faults.lost_steps_fraction
            self._applied_lost_fraction = self.faults.lost_steps_fraction
        self.model.advance()
        if self.faults.alarm_code and not self._alarm:
            self._raise_alarm(self.faults.alarm_code)
        if self.closed_loop and not self._alarm and abs(self.position_error_pulses) > self.position_error_limit_pulses:
            self._raise_alarm(ALARM_POSITION_ERROR)
        if axis.moving:
            return
        if self._homing:
            axis.set_counter(0)
            axis.actual_pulses = 0.0  # the home switch stops the platen exactly
            self._resync_encoder()
            self._homing = False
            self._homing_done = True
        if self._active_trigger:
            self._active_trigger = 0
            self._command_done = True
            self._path_done = True

    # ----------------------------------------------------------- protocol
    def response_delay_s(self) -> float:
        """The drive's turnaround before it answers (s)."""
        return self.response_delay_ms / 1000.0

    def _status(self) -> int:
        status = 0
        if self._alarm:
            status |= STATUS_FAULT
        else:
            status |= STATUS_ENABLED
        if self.faults.status_fault:  # a fault bit with no alarm code (0x0003 at rest)
            status |= STATUS_FAULT
        if self.model.axis.moving:
            status |= STATUS_RUNNING
        if self._command_done:
            status |= STATUS_COMMAND_DONE
        if self._path_done:
            status |= STATUS_PATH_DONE
        if self._homing_done:
            status |= STATUS_HOMING_DONE
        return status

    def _registers(self) -> dict[int, int]:
        regs = dict(self.pr0)
        regs.update(self.limit_words)
        pos_high, pos_low = _words(self.model.axis.counter_pulses)
        regs.update(
            {
                REG_STATUS: self._status(),
                REG_CONTROL: 0,
                REG_ALARM: self._alarm,
                REG_LIMIT_CONTROL: self.limit_control,
                REG_TRIGGER: self._active_trigger,
                REG_POSITION: pos_high,
                REG_POSITION + 1: pos_low,
            }
        )
        return regs

    def read_registers(self, address: int, count: int) -> list[int]:
        """Holding registers `address`..`address+count-1` after bringing the drive up to date."""
        self.sync()
        regs = self._registers()
        missing = [a for a in range(address, address + count) if a not in regs]
        if missing:
            raise ModbusError(ILLEGAL_ADDRESS, f"register 0x{missing[0]:04X} is not mapped")
        if self.faults.stuck:
            if self._stuck is None:
                self._stuck = {a: regs[a] for a in (REG_STATUS, REG_POSITION, REG_POSITION + 1)}
            regs.update(self._stuck)
        else:
            self._stuck = None
        return [regs[a] for a in range(address, address + count)]

    def write_registers(self, address: int, values: Sequence[int]) -> None:
        """Write registers in order; every register is checked before any is applied (all or nothing)."""
        self.sync()
        actions = [self._plan(address + i, value) for i, value in enumerate(values)]
        for action in actions:
            action()

    def _plan(self, reg: int, value: int) -> Callable[[], None]:
        if reg in self.pr0:
            if reg == REG_PR0_MODE and value not in _MODES:
                raise ModbusError(ILLEGAL_VALUE, f"PR0 mode 0x{value:04X} is not supported")
            return lambda: self.pr0.__setitem__(reg, value)
        if reg in self.limit_words:
            return lambda: self.limit_words.__setitem__(reg, value)
        if reg == REG_LIMIT_CONTROL:
            return lambda: setattr(self, "limit_control", value)
        if reg == REG_TRIGGER:
            commands = {
                TRIGGER_RUN_PR0: self.run_pr0,
                TRIGGER_HOMING: self.start_homing,
                TRIGGER_SET_ZERO: self.set_zero,
                TRIGGER_ESTOP: self.emergency_stop,
            }
            if value not in commands:
                raise ModbusError(ILLEGAL_VALUE, f"trigger 0x{value:04X} is not supported")
            return commands[value]
        if reg == REG_CONTROL:
            if value == CONTROL_RESET_ALARM:
                return self.reset_alarm
            if value == CONTROL_SAVE_EEPROM:
                return self._save_eeprom
            raise ModbusError(ILLEGAL_VALUE, f"control word 0x{value:04X} is not supported")
        raise ModbusError(ILLEGAL_ADDRESS, f"register 0x{reg:04X} is not writable")

    # ----------------------------------------------------------- commands
    def _save_eeprom(self) -> None:
        self.eeprom_writes += 1

    def _clamp(self, target: int) -> int:
        self.last_move_clamped = False
        if not self.limits_enabled:
            return target
        neg, pos = self.limits_pulses
        here = self.model.axis.counter_pulses
        if target > pos:
            self.last_move_clamped = True
            return pos if here <= pos else here
        if target < neg:
            self.last_move_clamped = True
            return neg if here >= neg else here
        return target

    def run_pr0(self) -> None:
        """Trigger 0x0010: run the PR0 block (ignored while an alarm is active)."""
        if self._alarm:
            self.ignored_triggers += 1
            return
        axis = self.model.axis
        mode = self.pr0[REG_PR0_MODE]
        target = _int32(self.pr0[REG_PR0_TARGET], self.pr0[REG_PR0_TARGET + 1])
        rpm = self.pr0[REG_PR0_VELOCITY]
        if mode == MODE_RELATIVE:
            target = axis.counter_pulses + target
        elif mode == MODE_VELOCITY:
            rpm = _int16(rpm)
            target = _INT32_MAX if rpm > 0 else _INT32_MIN
            rpm = abs(rpm)
        elif mode != MODE_ABSOLUTE:
            self._command_done = True
            return
        self.runs_executed += 1
        self.run_log.append((mode, target, self.limits_enabled))
        target = self._clamp(target)
        self._homing = False
        if rpm <= 0 or target == axis.counter_pulses:
            self._command_done = self._path_done = True
            self._active_trigger = 0
            return
        axis.start_move(
            target,
            velocity_pps=self._pps(rpm),
            accel_pps2=self._acc_pps2(self.pr0[self.accel_register]),
            decel_pps2=self._acc_pps2(self.pr0[self.decel_register]),
        )
        self._active_trigger = TRIGGER_RUN_PR0
        self._command_done = self._path_done = False

    def start_homing(self) -> None:
        """Trigger 0x0020: drive to the home switch at platen 0, then zero the counter."""
        if self._alarm:
            self.ignored_triggers += 1
            return
        axis = self.model.axis
        target = axis.counter_pulses - round(axis.actual_pulses)
        self._homing = True
        self._homing_done = False
        self._command_done = self._path_done = False
        self._active_trigger = TRIGGER_HOMING
        if target != axis.counter_pulses and self.homing_rpm > 0:
            acc = self._acc_pps2(self.pr0[self.accel_register])
            axis.start_move(target, velocity_pps=self._pps(self.homing_rpm), accel_pps2=acc, decel_pps2=acc)
        self.sync()

    def set_zero(self) -> None:
        """Trigger 0x0021: the present position becomes 0 (the platen does not move)."""
        self.model.axis.set_counter(0)
        self._resync_encoder()
        self._active_trigger = 0
        self._command_done = True

    def emergency_stop(self) -> None:
        """Trigger 0x0040: stop at once."""
        was_moving = self.model.axis.moving
        self.model.axis.stop()
        self._homing = False
        self._active_trigger = 0
        self._command_done = True
        if was_moving:
            self._path_done = False

    def power_cycle(self) -> None:
        """Power lost and back (e.g. with a re-plugged cable): the software limits are off and zero again and
        motion stops. The position counter is kept (an absolute-encoder drive); a drive that loses its counter
        would need homing, which this simulator does not model here."""
        self.model.axis.stop()
        self.limit_control = 0
        self.limit_words = dict.fromkeys(self.limit_words, 0)
        self._active_trigger = 0
        self._command_done = self._path_done = True

    def reset_alarm(self) -> None:
        """Control word 0x1111: clear the latched alarm; a persisting cause raises it again."""
        if not self._alarm:
            return
        self._alarm = 0
        self._resync_encoder()
        self.sync()
