"""Generic RS-485 Modbus RTU load-cell transmitter (devices.md §1) as a `ForceSensor`.

Register facts used here (all FC03 reads and FC16 writes, int32 = two registers, high word first, signed):

- 0x0005 lock: write 0x5AA5 to unlock configuration (locked again at power-up).
- 0x0006 firmware version; 0x0008 status word (bits 2-0 decimal places, b5 unstable, b6 overflow,
  b9 overload).
- 0x0020 ADC speed code; 0x0022/0x0023 filter type/strength.
- 0x0050-0x0051 gross weight (display units scaled by 10**decimals); 0x0054-0x0055 tare (0x7FFFFFFF tares
  now); 0x005E execute zero (0x00FF).
- 0x0060/0x0061 auto zero-tracking and 0x0066/0x0067 creep tracking: both must be 0 (off) for force control,
  because they silently cancel slow real force changes such as a deposit growing for hours.
"""

from __future__ import annotations

import math
from typing import Final

from drivers.clock import Clock, MonotonicClock
from drivers.errors import UnsafeSetting
from drivers.interfaces import DeviceIdentity, ForceReading, ForceStatus
from drivers.modbus_bus import ModbusBus, int32_from_words, int32_to_words

__all__ = ["UNIT_TO_N", "ModbusTransmitter"]

REG_LOCK: Final = 0x0005
REG_FIRMWARE: Final = 0x0006
REG_STATUS: Final = 0x0008
REG_ADC_SPEED: Final = 0x0020
REG_FILTER: Final = 0x0022  # 0x0022 type, 0x0023 strength
REG_GROSS: Final = 0x0050  # int32, 0x0050-0x0051
REG_TARE: Final = 0x0054  # int32, 0x0054-0x0055
REG_ZERO: Final = 0x005E
REG_ZERO_TRACKING: Final = 0x0060  # range, time
REG_CREEP_TRACKING: Final = 0x0066  # range, time

UNLOCK_CODE: Final = 0x5AA5
TARE_NOW: Final = 0x7FFFFFFF
ZERO_NOW: Final = 0x00FF

STATUS_DECIMALS_MASK: Final = 0x0007
STATUS_UNSTABLE: Final = 1 << 5
STATUS_OVERFLOW: Final = 1 << 6
STATUS_OVERLOAD: Final = 1 << 9

#: Newtons per display unit for the units the transmitter can be calibrated in (standard gravity).
UNIT_TO_N: Final[dict[str, float]] = {"N": 1.0, "g": 9.80665e-3, "kg": 9.80665}

_OVER_CAPACITY_FACTOR: Final = 1.1
_INT32_EXTREMES: Final = (-(2**31), 2**31 - 1)


class ModbusTransmitter:
    """An RS-485 load-cell transmitter on a shared `ModbusBus`; implements `ForceSensor`."""

    def __init__(
        self,
        *,
        bus: ModbusBus,
        device_id: int = 1,
        name: str = "load cell",
        unit: str = "N",
        scale_to_n: float | None = None,
        capacity_n: float | None = None,
        clock: Clock | None = None,
        timeout_s: float | None = None,
    ) -> None:
        if unit not in UNIT_TO_N:
            raise ValueError(f"{name}: unit must be one of {sorted(UNIT_TO_N)}, got {unit!r}")
        scale = UNIT_TO_N[unit] if scale_to_n is None else scale_to_n
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"{name}: scale_to_n must be a positive number, got {scale_to_n}")
        if capacity_n is not None and not (math.isfinite(capacity_n) and capacity_n > 0):
            raise ValueError(f"{name}: capacity_n must be a positive number of newtons, got {capacity_n}")
        self.name = name
        self.bus = bus
        self.device_id = device_id
        self.unit = unit
        self.scale_to_n = scale
        self.capacity_n = capacity_n
        self.timeout_s = timeout_s
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        self._seq = 0
        self._verified_link: int | None = None  # the bus opening on which verify_safe() last passed

    @property
    def reverify_needed(self) -> bool:
        """True when verify_safe() passed once but the port has been re-opened since (a dropped, re-found link)."""
        return self._verified_link is not None and self._verified_link != self.bus.link_generation

    async def connect(self) -> None:
        """Attach to the bus and open its port (idempotent)."""
        await self.bus.attach(self.name)

    async def close(self) -> None:
        """Detach from the bus; the port closes when its last device detaches."""
        await self.bus.detach(self.name)

    async def identify(self) -> DeviceIdentity:
        """Read the firmware version register and return the identity."""
        (firmware,) = await self._read(REG_FIRMWARE, 1, "firmware version")
        return DeviceIdentity(
            device=self.name,
            vendor="generic",
            model="RS-485 Modbus load-cell transmitter",
            firmware=f"0x{firmware:04X}",
        )

    async def read(self) -> ForceReading:
        """Read gross weight then status and return one reading; bad flags or over-range give no number."""
        high, low = await self._read(REG_GROSS, 2, "gross weight")
        t_s = self._clock.now()
        (status_word,) = await self._read(REG_STATUS, 1, "status word")
        raw_count = int32_from_words(high, low)
        decimals = status_word & STATUS_DECIMALS_MASK
        value_n: float | None = raw_count / 10**decimals * self.scale_to_n
        status = ForceStatus.OK
        if status_word & STATUS_UNSTABLE:
            status |= ForceStatus.UNSTABLE
        if status_word & STATUS_OVERFLOW:
            status |= ForceStatus.OVERFLOW
        if status_word & STATUS_OVERLOAD:
            status |= ForceStatus.OVERLOAD
        if raw_count in _INT32_EXTREMES:  # a pinned register is an out-of-range code, not a force
            status |= ForceStatus.OVERFLOW
        if (
            self.capacity_n is not None
            and value_n is not None
            and abs(value_n) > self.capacity_n * _OVER_CAPACITY_FACTOR
        ):
            status |= ForceStatus.OVERFLOW
        if status & (ForceStatus.OVERFLOW | ForceStatus.OVERLOAD):
            value_n = None
        self._seq += 1
        raw = f"gross=0x{high:04X}{low:04X} ({raw_count}) status=0x{status_word:04X} decimals={decimals}"
        return ForceReading.make(seq=self._seq, t_s=t_s, value_n=value_n, status=status, raw=raw)

    async def tare(self) -> None:
        """Unlock, then tare at the present load (0x7FFFFFFF to 0x0054-0x0055)."""
        await self._unlock()
        await self._write(REG_TARE, list(int32_to_words(TARE_NOW)), "tare now")

    async def zero(self) -> None:
        """Unlock, then execute zero (0x00FF to 0x005E)."""
        await self._unlock()
        await self._write(REG_ZERO, [ZERO_NOW], "execute zero")

    async def verify_safe(self) -> dict[str, object]:
        """Turn zero and creep tracking off, read them back (UnsafeSetting unless 0), return the settings."""
        await self._unlock()
        await self._write(REG_ZERO_TRACKING, [0, 0], "auto zero-tracking range/time")
        await self._write(REG_CREEP_TRACKING, [0, 0], "creep tracking range/time")
        zero_range, zero_time = await self._read(REG_ZERO_TRACKING, 2, "auto zero-tracking range/time")
        creep_range, creep_time = await self._read(REG_CREEP_TRACKING, 2, "creep tracking range/time")
        checks = (
            (REG_ZERO_TRACKING, "auto zero-tracking range", zero_range),
            (REG_ZERO_TRACKING + 1, "auto zero-tracking time", zero_time),
            (REG_CREEP_TRACKING, "creep tracking range", creep_range),
            (REG_CREEP_TRACKING + 1, "creep tracking time", creep_time),
        )
        for register, label, value in checks:
            if value != 0:
                raise UnsafeSetting(
                    self.name,
                    f"read back 0x{register:04X} ({label}) on slave {self.device_id}",
                    f"is {value} after writing 0; it must be 0 (off) for force control",
                    f"0x{value:04X}",
                )
        (adc_speed,) = await self._read(REG_ADC_SPEED, 1, "ADC speed code")
        filter_type, filter_strength = await self._read(REG_FILTER, 2, "filter type/strength")
        (firmware,) = await self._read(REG_FIRMWARE, 1, "firmware version")
        self._verified_link = self.bus.link_generation
        return {
            "zero_tracking_range": zero_range,
            "zero_tracking_time": zero_time,
            "creep_tracking_range": creep_range,
            "creep_tracking_time": creep_time,
            "adc_speed_code": adc_speed,
            "filter_type": filter_type,
            "filter_strength": filter_strength,
            "firmware": f"0x{firmware:04X}",
        }

    async def _unlock(self) -> None:
        await self._write(REG_LOCK, [UNLOCK_CODE], "unlock configuration")

    async def _read(self, address: int, count: int, what: str) -> list[int]:
        return await self.bus.read_holding(
            self.name, self.device_id, address, count, what=what, timeout_s=self.timeout_s
        )

    async def _write(self, address: int, values: list[int], what: str) -> None:
        # Every write here (unlock, tare, zero, tracking off) gives the same result when repeated.
        await self.bus.write_registers(
            self.name, self.device_id, address, values, what=what, timeout_s=self.timeout_s, idempotent=True
        )
