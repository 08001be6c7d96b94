"""How `rig runs` tells a live run from a killed one: by the rig lock its controller holds (exact), and for a run no
lock file names by the Unix time of the store's last record (sample or event), with a longer allowance while the
press approaches the stack (older runs recorded nothing until contact)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rig.data.run_index import ENGAGE_WITHIN_S, LIVE_WITHIN_S, read_entry
from rig.data.store import RunStore, Sample, read_overview
from rig.device_lock import LOCK_DIR_ENV, RigLock
from tests.runs.stored import unpack


def test_a_killed_run_reads_as_live_only_within_the_allowance_after_its_last_record(tmp_path: Path) -> None:
    run_dir = unpack("killed", tmp_path)
    ov = read_overview(run_dir / "run.sqlite")
    assert ov.last_sample is not None and ov.last_event is not None
    last = max(ov.last_sample.unix_time_s, ov.last_event["unix_time_s"])
    assert read_entry(run_dir, root=tmp_path, now=last + LIVE_WITHIN_S - 1).state == "running"
    entry = read_entry(run_dir, root=tmp_path, now=last + LIVE_WITHIN_S + 1)
    # a --sim run: its simulator waited its grace period for `rig resume`, and is gone
    assert entry.state == "killed" and not entry.resumable, entry
    assert "its simulator is gone" in entry.reason
    (run_dir / "sim-rig.toml").rename(run_dir / "rig.toml")  # as a real rig's run: the rig is still there
    entry = read_entry(run_dir, root=tmp_path, now=last + LIVE_WITHIN_S + 1)
    assert entry.state == "killed" and entry.resumable, entry
    assert "rig resume" in entry.reason


def test_a_run_whose_controller_holds_the_rig_lock_is_live_and_killed_once_it_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    run_dir = unpack("killed", tmp_path)
    ov = read_overview(run_dir / "run.sqlite")
    assert ov.last_sample is not None
    long_after = ov.last_sample.unix_time_s + 100 * ENGAGE_WITHIN_S  # no time rule would call it live
    soon_after = ov.last_sample.unix_time_s + 1.0  # any time rule would call it live
    lock = RigLock(["visa:TCPIP0::192.0.2.14::5025::SOCKET"], command="rig run (test)").acquire()
    try:
        lock.set_run_dir(run_dir)
        assert read_entry(run_dir, root=tmp_path, now=long_after).state == "running"
    finally:
        lock.release()
    with (tmp_path / "locks").joinpath("held-by-a-killed-controller.lock").open("w") as f:
        f.write(json.dumps({"pid": 1, "command": "rig run", "run_dir": str(run_dir.resolve())}))
    assert read_entry(run_dir, root=tmp_path, now=soon_after).state == "killed"  # named, but nobody holds it


async def _store(path: Path, *, sample_after_engage: bool) -> float:
    store = RunStore(path / "run.sqlite", batch_s=0.01)
    await store.open()
    t0 = 1_800_000_000.0
    await store.set_meta({"rig_config": {"rig": {"name": "press-1"}}, "speed": 1.0, "resumes": 0})
    store.event("state", "idle -> running: run started", test_time_s=2.0, unix_time_s=t0)
    store.progress(step_index=0, cycle=0, charge_c=0.0, time_in_step_s=0.0, test_time_s=2.0, state="running")
    store.event("pressure", "engaging at 180 kPa", test_time_s=2.0, unix_time_s=t0)
    if sample_after_engage:
        store.record(Sample(60.0, t0 + 58, None, None, 180e3, 180e3, 20.4, 1000.0, 0, 1, 0, 0.0))
    await store.flush()
    await store.close()
    (path / "protocol.yaml").write_text("name: engage test\n")
    return t0


@pytest.mark.parametrize("sample_after_engage", [False, True])
async def test_the_approach_gets_a_longer_allowance_than_a_run_that_samples(
    tmp_path: Path, sample_after_engage: bool
) -> None:
    t0 = await _store(tmp_path, sample_after_engage=sample_after_engage)
    silent = t0 + 5 * LIVE_WITHIN_S  # five times the sampling allowance, well within the approach's
    assert 5 * LIVE_WITHIN_S < ENGAGE_WITHIN_S
    entry = read_entry(tmp_path, root=tmp_path.parent, now=silent)
    assert entry.rig == "press-1" and entry.protocol == "engage test"
    assert entry.state == ("killed" if sample_after_engage else "running"), entry
    assert read_entry(tmp_path, root=tmp_path.parent, now=t0 + ENGAGE_WITHIN_S + 60).state == "killed"
