"""An abort that lands while the current is being switched back on must still end the run with the current off.

Found by a slow test: an operator abort during the resume after a pause reached the safe state while the
potentiostat's output was still off (so it switched nothing off); the engine then switched the output on and plated
to the step's capacity. Here the abort is started exactly as the real driver sends OUTP ON to the simulated 2450.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from rig.data.store import read_events
from rig.run.engine import RunState
from tests.support.run_harness import running


async def test_an_abort_while_the_output_is_switched_back_on_ends_the_run_with_the_current_off(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, speed=5.0) as r:
        await r.until(lambda: r.true_current_a() < -1e-5, "plating")
        await r.engine.pause()
        await r.until(lambda: r.true_current_a() == 0.0, "current off while paused", 30.0)
        pot = r.rig.devices.potentiostat
        real_output = pot.output
        aborts: list[asyncio.Task[object]] = []

        async def output_while_aborting(on: bool) -> None:
            if on and not aborts:  # the abort starts as OUTP ON goes out on the wire
                aborts.append(asyncio.get_running_loop().create_task(r.engine.abort("operator abort")))
            await real_output(on)

        pot.output = output_while_aborting  # type: ignore[method-assign]
        await r.engine.resume()
        await r.until(lambda: bool(aborts), "the resume switching the output on", 120.0)
        t_abort = r.rig.clock.now()
        async with asyncio.timeout(60):
            result = await asyncio.shield(r.task)
        await aborts[0]
        t_end = r.rig.clock.now()
        current_after = r.true_current_a()
    assert result.state is RunState.ABORTED
    assert current_after == 0.0
    # the run ended within seconds of the abort, not when the plate reached its capacity (~7200 s)
    assert t_end - t_abort < 60.0
    on_after_abort = [t for t, _, i, _ in r.truth if t > t_abort + 1.0 and i != 0.0]
    assert not on_after_abort  # no current a second after the abort
    assert any("operator abort" in e["message"] for e in read_events(tmp_path / "run.sqlite") if e["kind"] == "state")
