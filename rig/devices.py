"""Build the rig's devices from its configuration: one bus per serial line, one driver per device."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from drivers.clock import Clock
from drivers.keithley2450 import Keithley2450
from drivers.leadshine_pr import LeadshinePR
from drivers.mark10 import Mark10
from drivers.modbus_bus import ModbusBus
from drivers.modbus_transmitter import ModbusTransmitter
from rig.config import RigConfig


@dataclass
class RigDevices:
    """The connected (or connectable) devices of one rig."""

    config: RigConfig
    force: ModbusTransmitter | Mark10
    press: LeadshinePR
    potentiostat: Keithley2450
    buses: dict[str, ModbusBus] = field(default_factory=dict)

    async def close(self) -> None:
        """Close every device and bus, whatever state they are in."""
        for dev in (self.potentiostat, self.press, self.force):
            with contextlib.suppress(Exception):
                await dev.close()
        for bus in self.buses.values():
            with contextlib.suppress(Exception):
                await bus.close()


def _bus(cfg: RigConfig, name: str, buses: dict[str, ModbusBus]) -> ModbusBus:
    if name not in buses:
        b = cfg.buses[name]
        buses[name] = ModbusBus(
            port=b.port,
            baudrate=b.baudrate,
            bytesize=b.bytesize,
            parity=b.parity,
            stopbits=b.stopbits,
            timeout_s=b.timeout_s,
            retries=b.retries,
            usb_serial=b.usb_serial,
            name=name,
        )
    return buses[name]


def build_devices(cfg: RigConfig, *, clock: Clock) -> RigDevices:
    """Create the drivers the configuration names; nothing is opened yet."""
    buses: dict[str, ModbusBus] = {}
    lc = cfg.load_cell
    force: ModbusTransmitter | Mark10
    if lc.driver == "modbus_transmitter":
        force = ModbusTransmitter(
            bus=_bus(cfg, lc.bus, buses),
            device_id=lc.slave_id,
            name="load cell",
            unit=lc.unit if lc.unit in ("N", "g", "kg") else "N",
            scale_to_n=lc.scale_to_n,
            capacity_n=lc.capacity_n,
            clock=clock,
        )
    else:
        line = cfg.buses[lc.bus]
        force = Mark10(
            name="force gauge",
            url=line.port,
            usb_serial_number=line.usb_serial,
            baudrate=line.baudrate,
            timeout_s=max(line.timeout_s, 1.0),
            capacity_n=lc.capacity_n,
            clock=clock,
        )
    pc = cfg.press
    press = LeadshinePR(bus=_bus(cfg, pc.bus, buses), device_id=pc.slave_id, name="press", um_per_pulse=pc.um_per_pulse)
    pot = cfg.potentiostat
    potentiostat = Keithley2450(name="potentiostat", resource=pot.resource, timeout_s=pot.timeout_s, clock=clock)
    return RigDevices(config=cfg, force=force, press=press, potentiostat=potentiostat, buses=buses)
