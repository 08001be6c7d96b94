"""The durable run store: WAL + synchronous=FULL, batched samples, immediate events, refusal of bad files."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from rig.data.store import RunStore, Sample, StoreError, read_events, read_meta, read_progress, read_samples


def _sample(t: float, **kw: float) -> Sample:
    base = dict(
        test_time_s=t,
        unix_time_s=1.7e9 + t,
        voltage_v=-0.02,
        current_a=-5.6e-4,
        pressure_pa=180e3,
        setpoint_pa=180e3,
        force_n=20.3,
        position_um=1500.0,
        step_index=1,
        step_count=3,
        cycle=0,
        charge_c=t * 5.6e-4,
    )
    base.update(kw)
    return Sample(**base)  # type: ignore[arg-type]


def _count(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


async def test_wal_full_sync_and_batched_commits(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    store = RunStore(db, batch_s=30.0)
    await store.open()
    try:
        assert await store.pragma("journal_mode") == "wal"
        assert await store.pragma("synchronous") == 2  # FULL
        for i in range(50):
            assert store.record(_sample(float(i)))
        await asyncio.sleep(0.2)
        assert _count(db, "samples") == 0  # batched: nothing committed before the batch interval
        store.event("state", "running -> paused", test_time_s=50.0, unix_time_s=1.7e9)
        for _ in range(100):  # an event is committed at once, taking the queued samples with it
            if _count(db, "events") == 1:
                break
            await asyncio.sleep(0.02)
        assert _count(db, "events") == 1
        assert _count(db, "samples") == 50
    finally:
        await store.close()
    rows = read_samples(db)
    assert [r.test_time_s for r in rows] == [float(i) for i in range(50)]
    assert rows[7] == _sample(7.0)


async def test_metadata_progress_and_events_round_trip(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    store = RunStore(db)
    await store.open()
    try:
        await store.set_meta({"protocol_text": "name: x\n", "devices": {"potentiostat": "MODEL 2450"}})
        store.progress(step_index=4, cycle=2, charge_c=1.23, time_in_step_s=99.0, test_time_s=1234.5, state="running")
        store.event("alarm", "over-force", test_time_s=1.0, unix_time_s=2.0, data={"force_n": 41.2})
        await store.flush()
    finally:
        await store.close()
    assert read_meta(db)["protocol_text"] == "name: x\n"
    assert read_progress(db) == {
        "step_index": 4,
        "cycle": 2,
        "charge_c": 1.23,
        "time_in_step_s": 99.0,
        "test_time_s": 1234.5,
        "state": "running",
    }
    assert read_events(db)[0]["data"] == {"force_n": 41.2}


async def test_a_corrupt_file_is_reported_and_left_untouched(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    store = RunStore(db)
    await store.open()
    for i in range(2000):
        store.record(_sample(float(i)))
    await store.close()
    raw = bytearray(db.read_bytes())
    for page in range(2, len(raw) // 4096):  # scribble over the b-tree page headers
        raw[page * 4096 : page * 4096 + 12] = b"\xa5" * 12
    db.write_bytes(bytes(raw))
    before = db.read_bytes()
    store2 = RunStore(db)
    try:
        with pytest.raises(StoreError, match=r"integrity|malformed|cannot open"):
            await store2.open()
    finally:
        await store2.close()
    assert db.read_bytes() == before


async def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "other.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    store = RunStore(db)
    try:
        with pytest.raises(StoreError, match="not a rig run database"):
            await store.open()
    finally:
        await store.close()
    assert db.read_bytes() == before


async def test_disk_full_sets_the_error_keeps_the_batch_and_corrupts_nothing(tmp_path: Path) -> None:
    db = tmp_path / "run.sqlite"
    errors: list[str] = []
    store = RunStore(db, batch_s=0.05, on_error=errors.append)
    await store.open()
    try:
        for i in range(10):
            store.record(_sample(float(i)))
        await store.flush()
        pages = await store.pragma("page_count")
        await store.set_max_page_count(pages)  # the "disk" is now full
        for i in range(10, 3000):
            store.record(_sample(float(i)))
        await store.flush()
        assert store.error is not None and "full" in store.error
        assert errors == [store.error]
        assert store.failed_commits >= 1
        await store.set_max_page_count(1_000_000)  # space freed: the kept batch goes in with the next commit
        store.record(_sample(3000.0))
        await store.flush()
    finally:
        await store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    conn.close()
    assert [s.test_time_s for s in read_samples(db)] == [float(i) for i in range(3001)]


async def test_a_full_queue_is_a_storage_error_never_a_wait(tmp_path: Path) -> None:
    errors: list[str] = []
    store = RunStore(tmp_path / "run.sqlite", queue_size=5, batch_s=60.0, on_error=errors.append)
    await store.open()
    try:
        results = [store.record(_sample(float(i))) for i in range(8)]
    finally:
        await store.close()
    assert results[:5] == [True] * 5 and results[5:] == [False] * 3
    assert errors and "queue is full" in errors[0]
