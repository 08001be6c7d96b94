"""`rig check`: connect every device, show identity, one fresh reading and the safety settings read back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from drivers.clock import Clock
from drivers.interfaces import GalvanostaticConfig
from drivers.modbus_transmitter import ModbusTransmitter
from rig.config import RigConfig
from rig.devices import RigDevices, build_devices


@dataclass
class DeviceReport:
    """What `rig check` found for one device."""

    device: str
    ok: bool = False
    identity: str = ""
    reading: str = ""
    safety: dict[str, object] = field(default_factory=dict)
    error: str = ""


async def _check_force(devs: RigDevices) -> DeviceReport:
    rep = DeviceReport(device=devs.force.name)
    await devs.force.connect()
    ident = await devs.force.identify()
    rep.identity = f"{ident.vendor} {ident.model} fw {ident.firmware}".strip()
    if isinstance(devs.force, ModbusTransmitter):
        rep.safety = await devs.force.verify_safe()
    reading = await devs.force.read()
    if not reading.valid:
        raise RuntimeError(f"reading is not usable: status {reading.status!r}, raw {reading.raw!r}")
    rep.reading = f"{reading.force_n():.3f} N ({reading.status.name or 'OK'})"
    return rep


async def _check_press(devs: RigDevices) -> DeviceReport:
    cfg = devs.config.press
    rep = DeviceReport(device=devs.press.name)
    await devs.press.connect()
    ident = await devs.press.identify()
    rep.identity = f"{ident.vendor} {ident.model}".strip()
    rep.safety = await devs.press.verify_safe(cfg.travel_min_um, cfg.travel_max_um)
    status = await devs.press.status()
    rep.reading = f"position {status.position_um:.1f} µm, alarm 0x{status.alarm_code:04X}, enabled {status.enabled}"
    return rep


async def _check_potentiostat(devs: RigDevices) -> DeviceReport:
    cfg = devs.config.potentiostat
    pot = devs.potentiostat
    rep = DeviceReport(device=pot.name)
    await pot.connect()
    ident = await pot.identify()
    rep.identity = f"{ident.vendor} {ident.model} sn {ident.serial} fw {ident.firmware}"
    safety = await pot.verify_safe(cfg.voltage_limit_v)
    # open-circuit voltage: 0 A with the output on is a voltmeter; HIMP was verified first
    await pot.configure_galvanostatic(
        GalvanostaticConfig(current_a=0.0, voltage_limit_v=cfg.voltage_limit_v, nplc=cfg.nplc)
    )
    await pot.output(True)
    try:
        reading = await pot.read()
    finally:
        await pot.output(False)
    rep.reading = f"OCV {reading.voltage_v():.4f} V"
    after = await pot.safety_settings()
    if after.errors:
        raise RuntimeError(f"error queue not empty after the reading: {list(after.errors)}")
    rep.safety = {
        "output_off_mode": safety.output_off_mode,
        "voltage_limit_v": safety.voltage_limit_v,
        "output_on": after.output_on,
        "source_function": safety.source_function,
    }
    return rep


async def run_check(cfg: RigConfig, *, clock: Clock, per_device_timeout_s: float = 15.0) -> list[DeviceReport]:
    """Check every device; one failing device does not stop the others being checked."""
    devs = build_devices(cfg, clock=clock)
    checks: list[tuple[str, Callable[[RigDevices], Awaitable[DeviceReport]]]] = [
        (devs.force.name, _check_force),
        (devs.press.name, _check_press),
        (devs.potentiostat.name, _check_potentiostat),
    ]
    reports: list[DeviceReport] = []
    try:
        for name, check in checks:
            try:
                rep = await asyncio.wait_for(check(devs), per_device_timeout_s)
                rep.ok = True
            except TimeoutError:
                rep = DeviceReport(device=name, error=f"no answer within {per_device_timeout_s:g} s")
            except Exception as exc:
                rep = DeviceReport(device=name, error=f"{type(exc).__name__}: {exc}")
            reports.append(rep)
    finally:
        await devs.close()
    return reports
