"""Leadshine RS-485 Modbus stepper drive in PR (path) mode (devices.md §3) as a `Press`.

Register facts used here (FC03 reads, FC06 single writes, FC16 block writes; int32 high word first, pulses):

- PR0 block: 0x6200 mode (0x0001 absolute, 0x0041 relative), 0x6201/0x6202 target, 0x6203 velocity (rpm),
  0x6204/0x6205 acceleration/deceleration in ms per 1000 rpm (one source puts these one register later, so the
  two addresses are constructor arguments).
- 0x6002 trigger: 0x0010 runs PR0, 0x0040 is the emergency stop.
- 0x602C-0x602D position counter; 0x1003 motion status; 0x2203 alarm code.
- 0x1801 control word: 0x1111 resets the current alarm, sent ONLY by `reset_alarm()`. 0x2211 (EEPROM save) is
  never written by this driver.
- 0x6000 = 0x0002 enables the software limits in 0x6006-0x6007 (positive) and 0x6008-0x6009 (negative).

Stopping: devices.md documents one stop command, trigger 0x0040. Both `stop()` and `emergency_stop()` send it;
the drive decelerates at its own configured emergency-stop rate. No undocumented "decelerating stop" register
is used.

Travel limits: every move is checked against the verified software limits before any motion command is sent,
and no move is accepted until limits have been set and read back. A relative move reads the position counter
first to know its target; the drive's own software limits remain the backstop.

Re-verification: the bus counts its openings. A drive verified on an earlier opening of the port (the link
dropped and was re-found, maybe under a new path, and the drive may have been power-cycled meanwhile) refuses
every move with `DeviceDisconnected` until its travel limits are set and read back again (`verify_safe()` or
`set_travel_limits_um()`); `reverify_needed` says so without any I/O.

Alarms and moves: a drive in alarm (or disabled) acknowledges a PR0 block and its trigger like any other write
and then ignores them, so a move would "succeed" without moving. Every move therefore reads the motion status
first and raises `DeviceAlarm` (naming the alarm code) or `DeviceError` (not enabled) before anything is sent.
"""

from __future__ import annotations

import math
from typing import Final

from drivers.errors import DeviceAlarm, DeviceDisconnected, DeviceError, UnsafeSetting
from drivers.interfaces import DeviceIdentity, PressStatus
from drivers.modbus_bus import ModbusBus, int32_from_words, int32_to_words

__all__ = ["LEADSHINE_ALARMS", "LeadshinePR"]

REG_STATUS: Final = 0x1003
REG_CONTROL: Final = 0x1801
REG_ALARM: Final = 0x2203
REG_LIMIT_CONTROL: Final = 0x6000
REG_TRIGGER: Final = 0x6002
REG_LIMIT_POSITIVE: Final = 0x6006  # int32 0x6006-0x6007; negative limit follows at 0x6008-0x6009
REG_POSITION: Final = 0x602C  # int32 0x602C-0x602D
REG_PR0_MODE: Final = 0x6200
REG_PR0_TARGET: Final = 0x6201  # int32 0x6201-0x6202
REG_PR0_VELOCITY: Final = 0x6203

MODE_ABSOLUTE: Final = 0x0001
MODE_RELATIVE: Final = 0x0041
TRIGGER_RUN_PR0: Final = 0x0010
TRIGGER_EMERGENCY_STOP: Final = 0x0040
CONTROL_RESET_ALARM: Final = 0x1111
LIMITS_ENABLE: Final = 0x0002

STATUS_FAULT: Final = 1 << 0
STATUS_ENABLED: Final = 1 << 1
STATUS_RUNNING: Final = 1 << 2
STATUS_COMMAND_DONE: Final = 1 << 4
STATUS_PATH_DONE: Final = 1 << 5

#: Alarm codes of register 0x2203.
LEADSHINE_ALARMS: Final[dict[int, str]] = {
    0x00E0: "over-current",
    0x00C0: "over-voltage",
    0x0152: "phase loss / shaft lock",
    0x0180: "position error",
    0x0150: "encoder disconnected",
    0x00F0: "over-temperature",
}

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_UM_TOLERANCE: Final = 1e-9


def alarm_name(code: int) -> str:
    """Return the name of a Leadshine alarm code."""
    return LEADSHINE_ALARMS.get(code, "unknown alarm")


class LeadshinePR:
    """A Leadshine RS-485 stepper drive driven through PR0 on a shared `ModbusBus`; implements `Press`."""

    def __init__(
        self,
        *,
        bus: ModbusBus,
        device_id: int = 2,
        name: str = "press",
        um_per_pulse: float = 0.625,
        accel_register: int = 0x6204,
        decel_register: int = 0x6205,
        timeout_s: float | None = None,
    ) -> None:
        if not (math.isfinite(um_per_pulse) and um_per_pulse > 0):
            raise ValueError(f"{name}: um_per_pulse must be a positive number, got {um_per_pulse}")
        fixed = {REG_PR0_MODE, REG_PR0_TARGET, REG_PR0_TARGET + 1, REG_PR0_VELOCITY}
        if accel_register == decel_register or {accel_register, decel_register} & fixed:
            raise ValueError(
                f"{name}: accel/decel registers 0x{accel_register:04X}/0x{decel_register:04X} "
                "must differ from each other and from the PR0 mode, target and velocity registers"
            )
        self.name = name
        self.bus = bus
        self.device_id = device_id
        self.um_per_pulse = um_per_pulse
        self.accel_register = accel_register
        self.decel_register = decel_register
        self.timeout_s = timeout_s
        self._motion: tuple[int, int, int] | None = None
        self._limits_pulses: tuple[int, int] | None = None
        self._verified_link: int | None = None  # the bus opening on which the limits were last read back
        self.run_triggers_sent = 0  # PR0 run triggers written (each once: never retried)

    @property
    def reverify_needed(self) -> bool:
        """True when the limits were verified once but the port has been re-opened since."""
        return self._verified_link is not None and self._verified_link != self.bus.link_generation

    # ------------------------------------------------------------- link

    async def connect(self) -> None:
        """Attach to the bus and open its port (idempotent)."""
        await self.bus.attach(self.name)

    async def close(self) -> None:
        """Detach from the bus; the port closes when its last device detaches."""
        await self.bus.detach(self.name)

    async def identify(self) -> DeviceIdentity:
        """Check the drive answers (motion status) and return its identity; the drive reports no model."""
        await self._read(REG_STATUS, 1, "motion status")
        return DeviceIdentity(device=self.name, vendor="Leadshine", model="RS-485 stepper drive (PR mode)")

    # ---------------------------------------------------------- status

    async def status(self) -> PressStatus:
        """Read motion status, alarm code and position."""
        (raw,) = await self._read(REG_STATUS, 1, "motion status")
        (alarm,) = await self._read(REG_ALARM, 1, "alarm code")
        position_um = await self.position_um()
        return PressStatus(
            enabled=bool(raw & STATUS_ENABLED),
            moving=bool(raw & STATUS_RUNNING),
            done=bool(raw & STATUS_PATH_DONE) and not raw & STATUS_RUNNING,
            fault=bool(raw & STATUS_FAULT),
            alarm_code=alarm,
            position_um=position_um,
            raw_status=raw,
        )

    async def position_um(self) -> float:
        """Return the drive's position counter in µm."""
        return await self._position_pulses() * self.um_per_pulse

    async def alarm_code(self) -> int:
        """Return the active alarm code (0 when none)."""
        (alarm,) = await self._read(REG_ALARM, 1, "alarm code")
        return alarm

    async def enable(self) -> None:
        """Check the drive is enabled and free of alarms; raises DeviceAlarm (never resets it)."""
        await self._raise_if_alarm()
        (raw,) = await self._read(REG_STATUS, 1, "motion status")
        self._raise_if_not_ready(raw)

    def _raise_if_not_ready(self, raw: int) -> None:
        """Raise for a motion status with the fault bit set or the enabled bit clear."""
        if raw & STATUS_FAULT:
            raise DeviceAlarm(
                self.name,
                f"read 0x{REG_STATUS:04X} (motion status) on slave {self.device_id}",
                "fault bit set with no alarm code",
                f"0x{raw:04X}",
                code=0,
            )
        if not raw & STATUS_ENABLED:
            # devices.md documents no Modbus enable command: the drive is enabled by its enable input or
            # its forced-enable setting, so this driver checks and reports instead of guessing a register.
            raise DeviceError(
                self.name,
                f"read 0x{REG_STATUS:04X} (motion status) on slave {self.device_id}",
                "the drive reports it is not enabled (bit 1 clear); enable it by its enable input or setting",
                f"0x{raw:04X}",
            )

    async def reset_alarm(self) -> None:
        """Reset the current alarm (0x1111 to 0x1801); call only after the cause is understood."""
        await self.bus.write_register(
            self.name,
            self.device_id,
            REG_CONTROL,
            CONTROL_RESET_ALARM,
            what="reset alarm",
            timeout_s=self.timeout_s,
        )

    # ---------------------------------------------------------- motion

    async def set_motion_limits(self, *, velocity_rpm: int, accel_ms_per_krpm: int, decel_ms_per_krpm: int) -> None:
        """Write PR0 velocity, acceleration and deceleration; moves send them again with every PR0 block."""
        for label, value in (
            ("velocity_rpm", velocity_rpm),
            ("accel_ms_per_krpm", accel_ms_per_krpm),
            ("decel_ms_per_krpm", decel_ms_per_krpm),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 0xFFFF:
                raise ValueError(f"{self.name}: {label} must be an integer 1..65535, got {value!r}")
        await self._write_block(
            {
                REG_PR0_VELOCITY: velocity_rpm,
                self.accel_register: accel_ms_per_krpm,
                self.decel_register: decel_ms_per_krpm,
            },
            "PR0 motion limits",
        )
        self._motion = (velocity_rpm, accel_ms_per_krpm, decel_ms_per_krpm)

    async def move_absolute_um(self, position_um: float) -> int:
        """Check the target against the travel limits, then start an absolute PR0 move; returns its pulses."""
        target = self._to_pulses(position_um, "position_um")
        limits, motion = self._require_ready()
        self._check_target(target, limits)
        await self._check_can_move()
        await self._run_pr0(MODE_ABSOLUTE, target, motion, f"absolute move to {target} pulses")
        return target

    async def move_relative_um(self, delta_um: float) -> int:
        """Read the position, check the target against the travel limits, then start a relative PR0 move."""
        delta = self._to_pulses(delta_um, "delta_um")
        limits, motion = self._require_ready()
        if delta == 0:
            return 0
        await self._check_can_move()
        target = await self._position_pulses() + delta
        self._check_target(target, limits)
        await self._run_pr0(MODE_RELATIVE, delta, motion, f"relative move by {delta} pulses")
        return delta

    async def stop(self) -> None:
        """Stop motion with trigger 0x0040 (the drive decelerates at its emergency-stop rate)."""
        await self._trigger(TRIGGER_EMERGENCY_STOP, "stop", idempotent=True)

    async def emergency_stop(self) -> None:
        """Emergency stop (trigger 0x0040)."""
        await self._trigger(TRIGGER_EMERGENCY_STOP, "emergency stop", idempotent=True)

    # ---------------------------------------------------------- limits

    async def set_travel_limits_um(self, lower_um: float, upper_um: float) -> None:
        """Write and enable the software limits (rounded inwards to whole pulses), then verify them."""
        await self._apply_travel_limits(lower_um, upper_um)

    async def _apply_travel_limits(self, lower_um: float, upper_um: float) -> tuple[int, int]:
        if not (math.isfinite(lower_um) and math.isfinite(upper_um)):
            raise ValueError(f"{self.name}: travel limits must be finite, got {lower_um}, {upper_um}")
        lower = math.ceil(lower_um / self.um_per_pulse - _UM_TOLERANCE)
        upper = math.floor(upper_um / self.um_per_pulse + _UM_TOLERANCE)
        if not lower < upper:
            raise ValueError(
                f"{self.name}: lower travel limit {lower_um} µm must lie below the upper travel limit "
                f"{upper_um} µm "
                f"by at least one pulse ({self.um_per_pulse} µm)"
            )
        for value in (lower, upper):
            if not _INT32_MIN <= value <= _INT32_MAX:
                raise ValueError(f"{self.name}: travel limit {value} pulses does not fit int32")
        self._limits_pulses = None  # no moves while the limits are being changed or fail to verify
        await self.bus.write_registers(
            self.name,
            self.device_id,
            REG_LIMIT_POSITIVE,
            [*int32_to_words(upper), *int32_to_words(lower)],
            what="software limits +/-",
            timeout_s=self.timeout_s,
            idempotent=True,
        )
        await self.bus.write_register(
            self.name,
            self.device_id,
            REG_LIMIT_CONTROL,
            LIMITS_ENABLE,
            what="software limit enable",
            timeout_s=self.timeout_s,
            idempotent=True,
        )
        enabled, got_lower, got_upper = await self._read_limits()
        command = f"read back software limits on slave {self.device_id}"
        if not enabled:
            raise UnsafeSetting(
                self.name,
                f"{command} (0x{REG_LIMIT_CONTROL:04X})",
                "software limits are not enabled after writing 0x0002",
                None,
            )
        if got_upper != upper:
            raise UnsafeSetting(
                self.name,
                f"{command} (0x{REG_LIMIT_POSITIVE:04X})",
                f"positive limit reads {got_upper} pulses, wrote {upper}",
                str(got_upper),
            )
        if got_lower != lower:
            raise UnsafeSetting(
                self.name,
                f"{command} (0x{REG_LIMIT_POSITIVE + 2:04X})",
                f"negative limit reads {got_lower} pulses, wrote {lower}",
                str(got_lower),
            )
        self._limits_pulses = (lower, upper)
        self._verified_link = self.bus.link_generation
        return lower, upper

    async def travel_limits_um(self) -> tuple[bool, float, float]:
        """Read back (enabled, lower_um, upper_um) from the drive."""
        enabled, lower, upper = await self._read_limits()
        return enabled, lower * self.um_per_pulse, upper * self.um_per_pulse

    async def verify_safe(self, lower_um: float, upper_um: float) -> dict[str, object]:
        """The one start-up check (`rig check` and `rig run` alike): set and read back the software limits, then
        refuse an active alarm (DeviceAlarm naming its code), a fault bit with no alarm code, or a disabled drive."""
        lower, upper = await self._apply_travel_limits(lower_um, upper_um)
        await self._raise_if_alarm()
        (raw,) = await self._read(REG_STATUS, 1, "motion status")
        self._raise_if_not_ready(raw)
        return {
            "travel_limits_um": (lower * self.um_per_pulse, upper * self.um_per_pulse),
            "travel_limits_pulses": (lower, upper),
            "limits_enabled": True,
            "alarm_code": 0,
            "um_per_pulse": self.um_per_pulse,
        }

    # -------------------------------------------------------- internals

    def _to_pulses(self, um: float, label: str) -> int:
        if not math.isfinite(um):
            raise ValueError(f"{self.name}: {label} must be finite, got {um}")
        pulses = round(um / self.um_per_pulse)
        if not _INT32_MIN <= pulses <= _INT32_MAX:
            raise ValueError(f"{self.name}: {label}={um} µm is {pulses} pulses, beyond int32")
        return pulses

    def _require_ready(self) -> tuple[tuple[int, int], tuple[int, int, int]]:
        if self._limits_pulses is None:
            raise RuntimeError(
                f"{self.name}: no verified travel limits; call verify_safe() or set_travel_limits_um() first"
            )
        if self._motion is None:
            raise RuntimeError(f"{self.name}: no motion limits; call set_motion_limits() first")
        self._require_verified_link("move")
        return self._limits_pulses, self._motion

    def _require_verified_link(self, what: str) -> None:
        if self.reverify_needed:
            raise DeviceDisconnected(
                self.name,
                what,
                f"the port of {self.bus.name} was re-opened since the drive was verified; nothing was sent "
                "(set and read back the travel limits again: verify_safe())",
            )

    def _check_target(self, target: int, limits: tuple[int, int]) -> None:
        lower, upper = limits
        target_um = target * self.um_per_pulse
        if target > upper:
            raise ValueError(
                f"{self.name}: target {target_um} µm ({target} pulses) is beyond the upper travel limit "
                f"{upper * self.um_per_pulse} µm; nothing was sent"
            )
        if target < lower:
            raise ValueError(
                f"{self.name}: target {target_um} µm ({target} pulses) is beyond the lower travel limit "
                f"{lower * self.um_per_pulse} µm; nothing was sent"
            )

    async def _run_pr0(self, mode: int, target: int, motion: tuple[int, int, int], what: str) -> None:
        velocity, accel, decel = motion
        high, low = int32_to_words(target)
        self._require_verified_link(what)  # the status read before this may have re-opened the port
        await self._write_block(
            {
                REG_PR0_MODE: mode,
                REG_PR0_TARGET: high,
                REG_PR0_TARGET + 1: low,
                REG_PR0_VELOCITY: velocity,
                self.accel_register: accel,
                self.decel_register: decel,
            },
            f"PR0 block: {what}",
        )
        # Never retried: a repeated trigger could run a relative move twice.
        self._require_verified_link(what)
        self.run_triggers_sent += 1
        await self._trigger(TRIGGER_RUN_PR0, f"run PR0 ({what})", idempotent=False)

    async def _trigger(self, value: int, what: str, *, idempotent: bool) -> None:
        await self.bus.write_register(
            self.name,
            self.device_id,
            REG_TRIGGER,
            value,
            what=what,
            timeout_s=self.timeout_s,
            idempotent=idempotent,
        )

    async def _write_block(self, registers: dict[int, int], what: str) -> None:
        """Write registers in as few frames as possible: FC16 per contiguous run, FC06 for a lone register."""
        run: list[tuple[int, int]] = []
        for address in sorted(registers):
            if run and address != run[-1][0] + 1:
                await self._write_run(run, what)
                run = []
            run.append((address, registers[address]))
        if run:
            await self._write_run(run, what)

    async def _write_run(self, run: list[tuple[int, int]], what: str) -> None:
        if len(run) == 1:
            await self.bus.write_register(
                self.name,
                self.device_id,
                run[0][0],
                run[0][1],
                what=what,
                timeout_s=self.timeout_s,
                idempotent=True,
            )
        else:
            await self.bus.write_registers(
                self.name,
                self.device_id,
                run[0][0],
                [value for _, value in run],
                what=what,
                timeout_s=self.timeout_s,
                idempotent=True,
            )

    async def _position_pulses(self) -> int:
        high, low = await self._read(REG_POSITION, 2, "position counter")
        return int32_from_words(high, low)

    async def _read_limits(self) -> tuple[bool, int, int]:
        (control,) = await self._read(REG_LIMIT_CONTROL, 1, "software limit enable")
        pos_high, pos_low, neg_high, neg_low = await self._read(REG_LIMIT_POSITIVE, 4, "software limits +/-")
        return (
            bool(control & LIMITS_ENABLE),
            int32_from_words(neg_high, neg_low),
            int32_from_words(pos_high, pos_low),
        )

    async def _check_can_move(self) -> None:
        """Read the motion status; a fault raises DeviceAlarm with the alarm code, a disabled drive DeviceError."""
        (raw,) = await self._read(REG_STATUS, 1, "motion status")
        if raw & STATUS_FAULT:
            await self._raise_if_alarm()
        self._raise_if_not_ready(raw)

    async def _raise_if_alarm(self) -> None:
        code = await self.alarm_code()
        if code:
            raise DeviceAlarm(
                self.name,
                f"read 0x{REG_ALARM:04X} (alarm code) on slave {self.device_id}",
                f"alarm 0x{code:04X} ({alarm_name(code)}) is active; find the cause, then call reset_alarm()",
                f"0x{code:04X}",
                code=code,
            )

    async def _read(self, address: int, count: int, what: str) -> list[int]:
        return await self.bus.read_holding(
            self.name, self.device_id, address, count, what=what, timeout_s=self.timeout_s
        )
