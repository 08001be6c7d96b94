"""Columns added after schema 1 (deposit thickness, stiffness): new stores write them, older databases still read."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from rig.data.store import APPLICATION_ID, RunStore, Sample, read_samples


def _sample(t: float, **extra: float) -> Sample:
    return Sample(t, 1e9 + t, 0.0, -1e-3, 180e3, 180e3, 20.0, 500.0, 2, 2, 1, 0.1 * t, 0, **extra)


async def test_new_columns_round_trip(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run.sqlite")
    await store.open()
    try:
        store.record(_sample(1.0))
        store.record(_sample(2.0, deposit_um=1.5, stiffness_n_per_um=0.02))
        await store.flush()
    finally:
        await store.close()
    rows = read_samples(tmp_path / "run.sqlite")
    assert (rows[0].deposit_um, rows[0].stiffness_n_per_um) == (None, None)
    assert (rows[1].deposit_um, rows[1].stiffness_n_per_um) == (1.5, 0.02)


def _old_database(path: Path) -> None:
    """A schema-1 database as the first store wrote it (no deposit/stiffness columns)."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE samples (id INTEGER PRIMARY KEY, test_time_s REAL NOT NULL, unix_time_s REAL NOT NULL,
            voltage_v REAL, current_a REAL, pressure_pa REAL, setpoint_pa REAL, force_n REAL, position_um REAL,
            step_index INTEGER NOT NULL, step_count INTEGER NOT NULL, cycle INTEGER NOT NULL,
            charge_c REAL NOT NULL, flags INTEGER NOT NULL);
        CREATE TABLE events (id INTEGER PRIMARY KEY, test_time_s REAL NOT NULL, unix_time_s REAL NOT NULL,
            kind TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL);
        CREATE TABLE progress (id INTEGER PRIMARY KEY CHECK (id = 1), step_index INTEGER NOT NULL,
            cycle INTEGER NOT NULL, charge_c REAL NOT NULL, time_in_step_s REAL NOT NULL,
            test_time_s REAL NOT NULL, state TEXT NOT NULL);
        INSERT INTO samples VALUES (1, 0.5, 1e9, 0.0, 0.0, 1e4, 1e4, 1.1, 300.0, 0, 1, 0, 0.0, 0);
        """
    )
    conn.commit()
    conn.close()


async def test_older_database_reads_and_gains_the_columns_when_written(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    _old_database(path)
    assert read_samples(path)[0].deposit_um is None  # read-only: no change to the file
    store = RunStore(path, create=True)
    await store.open()
    try:
        store.record(_sample(3.0, deposit_um=2.0, stiffness_n_per_um=0.03))
        await store.flush()
    finally:
        await store.close()
    rows = read_samples(path)
    assert [r.test_time_s for r in rows] == [0.5, 3.0]
    assert rows[0].deposit_um is None and rows[1].deposit_um == 2.0
