"""The whole simulated rig: one physics model, four devices on their wire endpoints, and a control port."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hardware_sim.clock import SimClock
from hardware_sim.control_port import ControlPort
from hardware_sim.faults import Faults
from hardware_sim.keithley2450 import Keithley2450Sim
from hardware_sim.leadshine_drive import LeadshineDrive
from hardware_sim.line_timing import LineTiming
from hardware_sim.loadcell_transmitter import LoadCellTransmitter
from hardware_sim.mark10_gauge import Mark10Gauge
from hardware_sim.model import RigModel
from hardware_sim.params import SimParams
from hardware_sim.rtu_line import RtuLineServer


class _Closable(Protocol):
    async def close(self) -> None: ...


@dataclass(frozen=True)
class SimPortInfo:
    """One entry of the simulator's port listing, shaped like pyserial's `ListPortInfo` (device, serial_number)."""

    device: str
    serial_number: str


LOADCELL_ID = 1
STEPPER_ID = 2


class SimulatedRig:
    """Load cell + press drive on RS-485 (shared or split), a Mark-10 gauge and a Keithley 2450, on one model."""

    def __init__(
        self,
        *,
        params: SimParams | None = None,
        speed: float = 1.0,
        baudrate: int = 115200,
        gauge_baudrate: int = 115200,
        shared_bus: bool = True,
        line_timing: bool = True,
        control_port: int = 0,
    ) -> None:
        self.params = params or SimParams()
        self.clock = SimClock(speed)
        self.model = RigModel(self.params, clock=self.clock)
        self.shared_bus = shared_bus
        self.baudrate = baudrate
        self.loadcell = LoadCellTransmitter(self.model, slave_id=LOADCELL_ID)
        self.stepper = LeadshineDrive(self.model, slave_id=STEPPER_ID)
        if shared_bus:
            rs485 = RtuLineServer(
                slaves=[self.loadcell, self.stepper],
                timing=LineTiming(baudrate=baudrate, enabled=line_timing),
                name="rs485",
            )
            self.lines = {"rs485": rs485}
        else:
            self.lines = {
                "rs485_loadcell": RtuLineServer(
                    slaves=[self.loadcell], timing=LineTiming(baudrate=baudrate, enabled=line_timing), name="loadcell"
                ),
                "rs485_press": RtuLineServer(
                    slaves=[self.stepper], timing=LineTiming(baudrate=baudrate, enabled=line_timing), name="press"
                ),
            }
        self.gauge = Mark10Gauge(self.model, timing=LineTiming(baudrate=gauge_baudrate, enabled=line_timing))
        self.gauge_baudrate = gauge_baudrate
        self.potentiostat = Keithley2450Sim(self.model)
        self.faults: dict[str, Faults] = {
            "loadcell": self.loadcell.faults,
            "stepper": self.stepper.faults,
            "gauge": self.gauge.faults,
            "potentiostat": self.potentiostat.faults,
        }
        self.control = ControlPort(
            faults=self.faults,
            state=self.state,
            endpoints=self.endpoints,
            set_speed=self.clock.set_speed,
            port=control_port,
        )
        self._started = False

    async def start(self) -> None:
        """Open every endpoint."""
        try:
            for line in self.lines.values():
                await line.start()
            await self.gauge.start()
            await self.potentiostat.start()
            await self.control.start()
        except BaseException:
            await self.close()
            raise
        self._started = True

    async def close(self) -> None:
        """Close every endpoint."""
        servers: list[_Closable] = [self.control, self.potentiostat, self.gauge, *self.lines.values()]
        for server in servers:
            await server.close()
        self._started = False

    async def __aenter__(self) -> SimulatedRig:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def state(self) -> dict[str, Any]:
        """Ground truth of the model plus the active faults and the connections each endpoint has served."""
        accepted = {name: line.connections_accepted for name, line in self.lines.items()}
        accepted["gauge"] = self.gauge.connections_accepted
        accepted["potentiostat"] = self.potentiostat.connections_accepted
        return {
            **self.model.state(),
            "faults": {name: f.active() for name, f in self.faults.items()},
            "connections_accepted": accepted,  # every peer that opened a device since start
        }

    def endpoints(self) -> dict[str, str]:
        """Every endpoint by name."""
        out = {name: line.url for name, line in self.lines.items()}
        out["gauge"] = self.gauge.url
        out["potentiostat"] = self.potentiostat.resource
        out["control"] = self.control.address
        return out

    def serial_ports(self) -> list[SimPortInfo]:
        """The RS-485 adapters as an OS would list them (path and USB serial number); a line moved by
        `RtuLineServer.reopen()` shows up under its new path with the same serial number."""
        return [SimPortInfo(device=line.url, serial_number=line.usb_serial) for line in self.lines.values()]

    def config_toml(self) -> str:
        """A rig configuration (TOML) for these endpoints, loadable by `rig.config.load_config`."""
        m = self.params.mechanics
        lc_bus = "rs485" if self.shared_bus else "rs485_loadcell"
        press_bus = "rs485" if self.shared_bus else "rs485_press"
        # the hard limit sits above the highest setpoint (250 kPa) with margin, well below the load cell's capacity
        hard_limit_n = round(1.4 * 250e3 * m.area_m2, 1)
        travel_max_um = m.initial_gap_um + 1.6 * 250e3 * m.area_m2 / (0.02 * m.stiffness_scale)
        lines = [
            "# Rig configuration written by the simulator for its endpoints (hardware_sim).",
            "# The same drivers run a real rig: only the port and resource strings differ.",
            "[rig]",
            'name = "sim"',
            f"electrode_diameter_mm = {m.electrode_diameter_mm}",
            "min_pressure_kpa = 10.0",
            "max_pressure_kpa = 250.0",
            f"hard_force_limit_n = {hard_limit_n}",
            "",
            "[clock]",
            f"speed = {self.clock.speed}",
            "",
        ]
        for name, line in self.lines.items():
            lines += [f"[buses.{name}]", f'port = "{line.url}"', f"baudrate = {self.baudrate}", "timeout_s = 0.3", ""]
        lines += [
            "[buses.gauge]",
            f'port = "{self.gauge.url}"',
            f"baudrate = {self.gauge_baudrate}",
            "timeout_s = 1.0",
            "",
            "[load_cell]",
            'driver = "modbus_transmitter"     # or "mark10" with bus = "gauge"',
            f'bus = "{lc_bus}"',
            f"slave_id = {LOADCELL_ID}",
            'unit = "N"',
            "scale_to_n = 1.0",
            "capacity_n = 100.0",
            "",
            "[press]",
            'driver = "leadshine_pr"',
            f'bus = "{press_bus}"',
            f"slave_id = {STEPPER_ID}",
            f"um_per_pulse = {m.um_per_pulse}",
            "pulses_per_rev = 3200",
            "travel_min_um = -1000.0",
            f"travel_max_um = {round(travel_max_um, -2)}",
            "velocity_rpm = 60",
            "accel_ms_per_krpm = 100",
            "decel_ms_per_krpm = 100",
            "",
            "[potentiostat]",
            'driver = "keithley2450"',
            f'resource = "{self.potentiostat.resource}"',
            "timeout_s = 5.0",
            "voltage_limit_v = 3.0",
            "nplc = 1.0",
            "",
            "[sim]",
            f'control = "{self.control.address}"',
            "",
        ]
        return "\n".join(lines)

    def write_config(self, path: Path) -> None:
        """Write `config_toml()` to `path`."""
        path.write_text(self.config_toml(), encoding="utf-8")
