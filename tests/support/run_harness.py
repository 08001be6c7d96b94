"""An engine run on the in-process simulator, with the model's truth recorded: the harness of the fault tests.

`running(tmp_path, kpa=..., speed=..., scale=..., rig_overrides=...)` starts a plate at `kpa` under the run engine
(store, supervisor, settle after resume) and records the simulator's true force, current and stepper counter every
~2 ms of wall time in `Running.truth`. The simulator's model is the judge, never the controller's own view.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from protocols.plan import Plan
from protocols.validate import validate_protocol
from rig.cli.validate_cmd import limits_from_config
from rig.data.store import RunStore
from rig.run.engine import RunEngine, RunResult
from rig.run.supervisor import SupervisorSettings
from tests.control.harness import ControlledRig, controlled_rig

PROTOCOL = """\
name: overnight test
operator: tests
cell: {{id: t-6, electrolyte: dme, working_electrode: Al foil, diameter: 12 mm}}
steps:
  - pressure: {{target: {kpa} kPa, rate: 1200 kPa/min, tolerance: 5 kPa, settle: 2 s}}
  - plate: {{current_density: 0.5 mA/cm^2, capacity: 1 mAh/cm^2, voltage_limit: 1 V}}
"""
SETTLE_S = 5.0


def plan_for(rig: ControlledRig, kpa: float = 100.0, protocol: str | None = None) -> Plan:
    """The default plate at `kpa`, or `protocol` (YAML text), validated against the simulated rig's limits."""
    text = protocol if protocol is not None else PROTOCOL.format(kpa=kpa)
    return validate_protocol(text, "overnight.yaml", limits_from_config(rig.cfg))


@dataclass
class Running:
    rig: ControlledRig
    engine: RunEngine
    store: RunStore
    task: asyncio.Task[RunResult]
    truth: list[tuple[float, float, float, int]] = field(default_factory=list)  # t, force N, current A, counter

    def true_current_a(self) -> float:
        self.rig.sim.model.advance()
        return float(self.rig.sim.model.state()["current_a"])

    async def until(self, pred: Callable[[], bool], what: str, timeout_exp_s: float = 600.0) -> None:
        t_end = self.rig.clock.now() + timeout_exp_s
        while not pred():
            if self.task.done():
                raise AssertionError(f"the run ended while waiting for {what}: {self.task.result()}")
            if self.rig.clock.now() > t_end:
                raise AssertionError(f"timed out (experiment time) waiting for {what}")
            await asyncio.sleep(0.002)


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    *,
    kpa: float = 100.0,
    max_page_count: int | None = None,
    pot_timeout_s: float | None = None,
    protocol: str | None = None,
    **rig_kw: object,
) -> AsyncIterator[Running]:
    async with controlled_rig(tmp_path, **rig_kw) as rig:  # type: ignore[arg-type]
        if pot_timeout_s is not None:
            rig.devices.potentiostat.timeout_s = pot_timeout_s
        engine_box: list[RunEngine] = []
        store = RunStore(
            tmp_path / "run.sqlite",
            batch_s=0.05,
            on_error=lambda why: engine_box[0].storage_error(why),
            on_recover=lambda: engine_box[0].storage_recovered(),
            max_page_count=max_page_count,
        )
        await store.open()
        engine = RunEngine(
            plan=plan_for(rig, kpa, protocol),
            potentiostat=rig.devices.potentiostat,
            controller=rig.ctl,
            clock=rig.clock,
            voltage_compliance_v=rig.cfg.potentiostat.voltage_limit_v,
            store=store,
            sample_period_s=0.25,
            settle_after_resume_s=SETTLE_S,
            supervisor=SupervisorSettings(clear_s=1.0),
        )
        engine_box.append(engine)
        task = asyncio.get_running_loop().create_task(engine.run(), name="engine")
        r = Running(rig, engine, store, task)

        async def record() -> None:
            while True:
                m = rig.sim.model
                m.advance()
                r.truth.append((rig.clock.now(), m.force_n, float(m.state()["current_a"]), m.axis.counter_pulses))
                await asyncio.sleep(0.002)

        rec = asyncio.get_running_loop().create_task(record(), name="truth")
        try:
            yield r
        finally:
            rec.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rec
            if not task.done():
                await engine.abort("test over")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 120)
            await store.close()


def quick_check(path: Path) -> str:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(conn.execute("PRAGMA quick_check").fetchone()[0])
    finally:
        conn.close()
