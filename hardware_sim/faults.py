"""Fault injection, per device, switchable at run time in-process or over the control port.

Each simulated device owns one `Faults` object. Tests set attributes directly; another process sends
`{"cmd": "fault", "device": "loadcell", "set": {"no_reply": true}}` to the control port (see control_port.py).
Only the fields a device declares in `supported` may be set on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Faults:
    """Faults that may be injected into one simulated device. Defaults mean healthy."""

    supported: frozenset[str] = field(default_factory=frozenset, repr=False)
    no_reply: bool = False  # swallow requests silently
    delay_s: float = 0.0  # extra wall delay before each reply
    corrupt: bool = False  # flip bits in replies: bad CRC (Modbus), garbage bytes (ASCII/SCPI)
    modbus_exception: int = 0  # answer every request with this exception code (0 = off)
    stuck: bool = False  # freeze the reported value at what it was when set
    overload: bool = False  # raise the overload status (or reply past range)
    disconnect: bool = False  # drop connections and refuse new ones while set
    lost_steps_fraction: float = 0.0  # stepper: fraction of pulses that do not move the platen
    alarm_code: int = 0  # stepper: raise this alarm code (0 = none)
    status_fault: bool = False  # stepper: the status register's fault bit set while the alarm code reads 0
    compliance_trip: bool = False  # potentiostat: force the compliance state
    scpi_error: int = 0  # potentiostat: push this SCPI error code on every command (0 = off)
    nan: bool = False  # reply with a non-number (ASCII 'nan', SCPI 9.9E+37 style) where the device can
    spike_n: float = 0.0  # load cell: add this many newtons to the next gross-weight reply only, then clear itself
    lost_reply_register: int = 0  # Modbus: a write covering this register is EXECUTED but its reply is lost (0 = off)

    def set(self, **values: Any) -> None:
        """Set faults by name, refusing names this device does not support and wrong types."""
        known = {f.name: f for f in fields(self) if f.name != "supported"}
        for name, value in values.items():
            if name not in known:
                raise KeyError(f"unknown fault {name!r}; known: {sorted(known)}")
            if name not in self.supported:
                raise KeyError(f"fault {name!r} is not supported by this device; supported: {sorted(self.supported)}")
            current = getattr(self, name)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise TypeError(f"fault {name!r} takes true/false, got {value!r}")
            elif isinstance(current, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise TypeError(f"fault {name!r} takes an integer, got {value!r}")
            elif isinstance(current, float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise TypeError(f"fault {name!r} takes a number, got {value!r}")
                value = float(value)
            setattr(self, name, value)

    def clear(self) -> None:
        """Back to healthy."""
        for f in fields(self):
            if f.name != "supported":
                setattr(self, f.name, f.default)

    def active(self) -> dict[str, Any]:
        """The faults currently set (non-default values)."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "supported" and getattr(self, f.name) != f.default
        }


MODBUS_FAULTS = frozenset(
    {"no_reply", "delay_s", "corrupt", "modbus_exception", "stuck", "disconnect", "lost_reply_register"}
)
LOADCELL_FAULTS = MODBUS_FAULTS | {"overload", "spike_n"}
STEPPER_FAULTS = MODBUS_FAULTS | {"lost_steps_fraction", "alarm_code", "status_fault"}
GAUGE_FAULTS = frozenset({"no_reply", "delay_s", "corrupt", "stuck", "overload", "disconnect", "nan"})
POTENTIOSTAT_FAULTS = frozenset(
    {"no_reply", "delay_s", "corrupt", "disconnect", "compliance_trip", "scpi_error", "nan"}
)
