"""The controller tests' harness: the in-process simulator, the real drivers, and the controller on them.

Everything runs accelerated (the controller's experiment clock runs at the simulator's speed) with the serial
line timing off, so a test takes a few wall seconds. The model's true pressure is the judge, never the
controller's own view.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hardware_sim.params import MechanicsParams, SimParams
from hardware_sim.rig import SimulatedRig
from rig.clock import ExperimentClock
from rig.config import RigConfig, load_config
from rig.control.controller import ControllerSettings, PressureController
from rig.devices import RigDevices, build_devices


@dataclass
class ControlledRig:
    """A simulated rig with the pressure controller running on it."""

    sim: SimulatedRig
    cfg: RigConfig
    clock: ExperimentClock
    devices: RigDevices
    ctl: PressureController

    def true_kpa(self) -> float:
        """The model's true stack pressure now."""
        self.sim.model.advance()
        return self.sim.model.pressure_kpa()

    def true_force_n(self) -> float:
        """The model's true force now."""
        self.sim.model.advance()
        return self.sim.model.force_n

    @property
    def counter_pulses(self) -> int:
        """The stepper drive's position counter."""
        return self.sim.model.axis.counter_pulses


@dataclass
class TruthRecorder:
    """Records the model's true pressure every few wall milliseconds while active."""

    rig: ControlledRig
    every_s: float = 0.002
    values: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.values.append(self.rig.true_kpa())
            await asyncio.sleep(self.every_s)

    async def __aenter__(self) -> TruthRecorder:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="truth-recorder")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.values.append(self.rig.true_kpa())


@contextlib.asynccontextmanager
async def controlled_rig(
    tmp_path: Path,
    *,
    scale: float = 1.0,
    speed: float = 10.0,
    initial_gap_um: float = 30.0,
    electrolyte: str = "dme",
    driver: str = "modbus_transmitter",
    rig_overrides: dict[str, Any] | None = None,
    press_overrides: dict[str, Any] | None = None,
    bus_overrides: dict[str, Any] | None = None,
    settings: ControllerSettings | None = None,
    seed: int = 7,
) -> AsyncIterator[ControlledRig]:
    """Start a simulator, build the real drivers from the configuration it writes, start the controller."""
    params = SimParams(
        electrolyte=electrolyte,  # type: ignore[arg-type]
        mechanics=MechanicsParams(stiffness_scale=scale, initial_gap_um=initial_gap_um),
        seed=seed,
    )
    sim = SimulatedRig(params=params, speed=speed, line_timing=False)
    await sim.start()
    devices: RigDevices | None = None
    ctl: PressureController | None = None
    try:
        path = tmp_path / "rig.toml"
        sim.write_config(path)
        cfg = load_config(path)
        rig = cfg.rig.model_copy(update=rig_overrides or {})
        press = cfg.press.model_copy(update=press_overrides or {})
        buses = {name: b.model_copy(update=bus_overrides or {}) for name, b in cfg.buses.items()}
        load_cell = cfg.load_cell
        if driver == "mark10":
            load_cell = load_cell.model_copy(update={"driver": "mark10", "bus": "gauge"})
        cfg = cfg.model_copy(update={"rig": rig, "press": press, "buses": buses, "load_cell": load_cell})
        clock = ExperimentClock(speed)
        devices = build_devices(cfg, clock=clock)
        ctl = PressureController.from_config(
            cfg, force=devices.force, press=devices.press, clock=clock, settings=settings
        )
        await ctl.start()
        yield ControlledRig(sim=sim, cfg=cfg, clock=clock, devices=devices, ctl=ctl)
    finally:
        if ctl is not None:
            await ctl.stop()
        if devices is not None:
            await devices.close()
        await sim.close()
