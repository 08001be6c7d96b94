"""The durable run store: one SQLite database per run, WAL mode, synchronous=FULL, one writer.

Samples are queued (bounded) and committed in batches about once a second by one writer task; events (state
changes, alarms, operator commands) are committed at once. SQLite runs in one dedicated thread, so the control
loop never waits on the disk. A full queue or a failed commit sets `error` and calls `on_error`; the caller
(the engine) pauses the run — samples are never silently dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
APPLICATION_ID = 0x52494731  # "RIG1": marks our databases so a foreign file is recognised

FLAG_STALE = 1
FLAG_SUSPENDED = 2
FLAG_RESUMED = 4
FLAG_PAUSED = 8
FLAG_ENDED = 16  # after the protocol: the safe state and the pressure release (no step runs)


class StoreError(Exception):
    """The run store cannot be opened or written; names the file."""


@dataclass(frozen=True)
class Sample:
    """One row of run data (SI units)."""

    test_time_s: float
    unix_time_s: float
    voltage_v: float | None
    current_a: float | None
    pressure_pa: float | None
    setpoint_pa: float | None
    force_n: float | None
    position_um: float | None
    step_index: int
    step_count: int
    cycle: int
    charge_c: float
    flags: int = 0
    deposit_um: float | None = None  # operando deposit thickness estimate (rig.data.porosity), None before plating
    stiffness_n_per_um: float | None = None  # the controller's online stack stiffness estimate


_SAMPLE_COLUMNS = [f.name for f in fields(Sample)]
# columns added after schema 1: (name, SQL type); older databases get them on open, readers default them to None
_ADDED_COLUMNS = [("deposit_um", "REAL"), ("stiffness_n_per_um", "REAL")]

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY,
    test_time_s REAL NOT NULL, unix_time_s REAL NOT NULL,
    voltage_v REAL, current_a REAL, pressure_pa REAL, setpoint_pa REAL, force_n REAL, position_um REAL,
    step_index INTEGER NOT NULL, step_count INTEGER NOT NULL, cycle INTEGER NOT NULL,
    charge_c REAL NOT NULL, flags INTEGER NOT NULL,
    deposit_um REAL, stiffness_n_per_um REAL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    test_time_s REAL NOT NULL, unix_time_s REAL NOT NULL,
    kind TEXT NOT NULL, message TEXT NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS progress (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    step_index INTEGER NOT NULL, cycle INTEGER NOT NULL, charge_c REAL NOT NULL, time_in_step_s REAL NOT NULL,
    test_time_s REAL NOT NULL, state TEXT NOT NULL
);
PRAGMA user_version = {SCHEMA_VERSION};
"""


def _connect(path: Path, *, create: bool) -> sqlite3.Connection:
    """Open (or create) a run database, checking it is ours and intact."""
    exists = path.exists()
    if not exists and not create:
        raise StoreError(f"{path}: no run database here")
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if exists:
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                conn.close()
                raise StoreError(f"{path}: the database fails its integrity check ({ok}); it is left untouched")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id != APPLICATION_ID:
                conn.close()
                raise StoreError(f"{path}: not a rig run database (application_id {app_id:#x}); it is left untouched")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        if not exists:
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.executescript(_SCHEMA)
        elif create:
            have = _sample_columns_present(conn)
            for name, sql_type in _ADDED_COLUMNS:
                if name not in have:
                    conn.execute(f"ALTER TABLE samples ADD COLUMN {name} {sql_type}")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot open the run database: {exc}; it is left untouched") from exc
    return conn


class RunStore:
    """Writes one run's data durably; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        create: bool = True,
        batch_s: float = 1.0,
        queue_size: int = 20_000,
        on_error: Callable[[str], None] | None = None,
        on_recover: Callable[[], None] | None = None,
        max_page_count: int | None = None,
    ) -> None:
        self.path = Path(path)
        self._create = create
        self._batch_s = batch_s
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=queue_size)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-store")
        self._conn: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._on_error = on_error
        self._on_recover = on_recover
        self._max_page_count = max_page_count  # a size cap: how tests make SQLite report "disk full"
        self.error: str | None = None
        self.samples_written = 0
        self.commits = 0
        self.failed_commits = 0

    async def open(self) -> None:
        """Open the database and start the writer task."""
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, lambda: _connect(self.path, create=self._create))
        if self._max_page_count is not None:
            await self.set_max_page_count(self._max_page_count)
        self._task = asyncio.create_task(self._writer(), name=f"run-store:{self.path.name}")

    async def close(self) -> None:
        """Flush what is queued, stop the writer, close the database."""
        if self._task is not None:
            await self._queue.put(("stop", None))
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------ producers (never block)
    def record(self, sample: Sample) -> bool:
        """Queue a sample without waiting; False (and a storage error) when the queue is full."""
        try:
            self._queue.put_nowait(("sample", sample))
        except asyncio.QueueFull:
            self._fail("the sample queue is full: storage cannot keep up")
            return False
        return True

    def event(
        self, kind: str, message: str, *, test_time_s: float, unix_time_s: float, data: dict[str, Any] | None = None
    ) -> None:
        """Queue an event; it is committed at once by the writer."""
        row = (test_time_s, unix_time_s, kind, message, json.dumps(data or {}, default=str))
        try:
            self._queue.put_nowait(("event", row))
        except asyncio.QueueFull:
            self._fail(f"the queue is full: event {kind!r} could not be stored")

    def progress(
        self, *, step_index: int, cycle: int, charge_c: float, time_in_step_s: float, test_time_s: float, state: str
    ) -> None:
        """Queue the resumable step progress (kept as one row, committed with the next batch)."""
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(("progress", (step_index, cycle, charge_c, time_in_step_s, test_time_s, state)))

    async def set_meta(self, values: dict[str, Any]) -> None:
        """Store run metadata (committed before returning)."""
        rows = [(k, v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in values.items()]
        await self._run(lambda c: c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows))

    async def set_max_page_count(self, pages: int) -> None:
        """Cap the database size in pages (SQLite then fails writes with 'database or disk is full')."""
        await self._run(lambda c: c.execute(f"PRAGMA max_page_count = {int(pages)}"))

    async def pragma(self, name: str) -> Any:
        """Read a PRAGMA on the writer's own connection."""
        if not name.isidentifier():
            raise ValueError(name)
        return await self._run(lambda c: c.execute(f"PRAGMA {name}").fetchone()[0])

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put(("flush", done))
        await done

    # ------------------------------------------------------------ writer
    def _fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
            if self._on_error is not None:
                self._on_error(why)

    async def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        conn = self._conn
        if conn is None:
            raise StoreError(f"{self.path}: the store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        samples: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        progress: tuple[Any, ...] | None = None
        waiters: list[asyncio.Future[None]] = []
        deadline = loop.time() + self._batch_s
        stopping = False
        while not stopping:
            urgent = False
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):  # not wait_for: see supervisor
                    kind, item = await self._queue.get()
                if kind == "sample":
                    samples.append(astuple(item))
                elif kind == "event":
                    events.append(item)
                    urgent = True
                elif kind == "progress":
                    progress = item
                elif kind == "flush":
                    waiters.append(item)
                    urgent = True
                elif kind == "stop":
                    stopping = urgent = True
            except TimeoutError:
                urgent = True
            if not urgent and loop.time() < deadline:
                continue
            if samples or events or progress is not None:
                try:
                    await self._run(functools.partial(_commit, samples=samples, events=events, progress=progress))
                    self.samples_written += len(samples)
                    self.commits += 1
                    samples, events, progress = [], [], None
                    if self.error is not None:  # a commit went through again: storage is back
                        self.error = None
                        if self._on_recover is not None:
                            self._on_recover()
                except (sqlite3.Error, OSError) as exc:
                    # keep the batch: it is retried with the next one (the engine pauses on the error)
                    self._fail(f"{self.path}: commit failed: {exc}")
                    self.failed_commits += 1
            for w in waiters:
                if not w.done():
                    w.set_result(None)
            waiters = []
            deadline = loop.time() + self._batch_s


def _commit(
    conn: sqlite3.Connection,
    *,
    samples: list[tuple[Any, ...]],
    events: list[tuple[Any, ...]],
    progress: tuple[Any, ...] | None,
) -> None:
    with conn:
        conn.execute("BEGIN")
        if samples:
            cols = ", ".join(_SAMPLE_COLUMNS)
            marks = ", ".join("?" for _ in _SAMPLE_COLUMNS)
            conn.executemany(f"INSERT INTO samples ({cols}) VALUES ({marks})", samples)
        if events:
            conn.executemany(
                "INSERT INTO events (test_time_s, unix_time_s, kind, message, data) VALUES (?, ?, ?, ?, ?)", events
            )
        if progress is not None:
            conn.execute("INSERT OR REPLACE INTO progress VALUES (1, ?, ?, ?, ?, ?, ?)", progress)


def _sample_columns_present(conn: sqlite3.Connection) -> set[str]:
    return {row[1] for row in conn.execute("PRAGMA table_info(samples)")}


def read_samples(path: Path) -> list[Sample]:
    """All samples of a run database, in order (read-only); columns an older database lacks read as None."""
    conn = _connect(path, create=False)
    try:
        have = _sample_columns_present(conn)
        cols = ", ".join(c if c in have else "NULL" for c in _SAMPLE_COLUMNS)
        rows: Iterable[tuple[Any, ...]] = conn.execute(f"SELECT {cols} FROM samples ORDER BY id")
        return [Sample(*row) for row in rows]
    finally:
        conn.close()


def read_events(path: Path) -> list[dict[str, Any]]:
    """All events of a run database, in order (read-only)."""
    conn = _connect(path, create=False)
    try:
        rows = conn.execute("SELECT test_time_s, unix_time_s, kind, message, data FROM events ORDER BY id")
        return [
            {"test_time_s": t, "unix_time_s": u, "kind": k, "message": m, "data": json.loads(d)}
            for t, u, k, m, d in rows
        ]
    finally:
        conn.close()


def is_simulated_run(run_dir: Path, meta: dict[str, str]) -> bool:
    """Whether a run ran on the simulator: `rig run --sim` leaves the simulator's files in the run folder; a run on
    a simulator started by hand (`rig run --config sim-rig.toml`) is known by its accelerated clock (no hardware
    runs faster than real time) or the rig name the simulator writes into its configuration."""
    if (run_dir / "sim-ready.json").exists() or (run_dir / "sim-rig.toml").exists():
        return True
    try:
        if float(meta.get("speed", "1")) != 1.0:
            return True
        name = json.loads(meta.get("rig_config", "{}")).get("rig", {}).get("name")
    except (ValueError, TypeError, AttributeError):
        return False
    return bool(name == "sim")


def read_meta(path: Path) -> dict[str, str]:
    """Run metadata (read-only)."""
    conn = _connect(path, create=False)
    try:
        return dict(conn.execute("SELECT key, value FROM meta"))
    finally:
        conn.close()


def read_last_sample(path: Path) -> Sample | None:
    """The last stored sample (read-only), or None."""
    conn = _connect(path, create=False)
    try:
        cols = ", ".join(_SAMPLE_COLUMNS)
        row = conn.execute(f"SELECT {cols} FROM samples ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    return None if row is None else Sample(*row)


def read_progress(path: Path) -> dict[str, Any] | None:
    """The last committed step progress, or None."""
    conn = _connect(path, create=False)
    try:
        row = conn.execute(
            "SELECT step_index, cycle, charge_c, time_in_step_s, test_time_s, state FROM progress WHERE id = 1"
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    keys = ("step_index", "cycle", "charge_c", "time_in_step_s", "test_time_s", "state")
    return dict(zip(keys, row, strict=True))


@dataclass(frozen=True)
class StoreOverview:
    """What a listing of runs needs from one run database, read in one go (`read_overview`)."""

    meta: dict[str, str]
    progress: dict[str, Any] | None
    first_event: dict[str, Any] | None
    last_event: dict[str, Any] | None
    last_sample: Sample | None
    samples: int


def read_overview(path: Path) -> StoreOverview:
    """Metadata, progress, first and last event, last sample and the sample count, on one read-only connection;
    a database that cannot be read raises StoreError naming the file."""
    conn = _connect(path, create=False)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        keys = ("step_index", "cycle", "charge_c", "time_in_step_s", "test_time_s", "state")
        row = conn.execute(f"SELECT {', '.join(keys)} FROM progress WHERE id = 1").fetchone()
        progress = None if row is None else dict(zip(keys, row, strict=True))
        events = [
            conn.execute(f"SELECT test_time_s, unix_time_s, kind, message FROM events ORDER BY id {order} LIMIT 1")
            .fetchone()
            for order in ("ASC", "DESC")
        ]
        first, last = (
            None if e is None else {"test_time_s": e[0], "unix_time_s": e[1], "kind": e[2], "message": e[3]}
            for e in events
        )
        have = _sample_columns_present(conn)
        cols = ", ".join(c if c in have else "NULL" for c in _SAMPLE_COLUMNS)
        sample = conn.execute(f"SELECT {cols} FROM samples ORDER BY id DESC LIMIT 1").fetchone()
        count = conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: cannot read the run database: {exc}") from exc
    finally:
        conn.close()
    return StoreOverview(meta, progress, first, last, None if sample is None else Sample(*sample), int(count))
