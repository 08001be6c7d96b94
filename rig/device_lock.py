"""One controller per rig: an exclusive lock keyed by the devices themselves, taken before anything is opened.

A rig is its devices, not its name: two configurations that name the same serial port (by path, by a symlink such
as /dev/serial/by-id/..., or by the adapter's USB serial number), the same VISA resource, or the same operator
socket describe one rig, and only one `rig run`, `rig resume`, `rig check` or `rig safe` may hold it. Each key is
an advisory `flock` on a small file in a lock folder shared by every user of the machine (`/run/lock/rig` where
it can be written, else a folder in the temp dir; `RIG_LOCK_DIR` overrides). The kernel releases a lock when its
process dies however it dies (kill -9 included), so a lock is never stale; the file keeps the holder's PID, command
and run folder for the refusal message. docs/decisions/0025-one-controller-per-rig.md.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rig.config import RigConfig

LOCK_DIR_ENV = "RIG_LOCK_DIR"
_SYSTEM_LOCK_DIR = Path("/run/lock")


class RigLocked(Exception):
    """Another controller holds one of this rig's devices."""

    def __init__(self, key: str, holder: dict[str, Any]) -> None:
        self.key = key
        self.holder = holder
        pid = holder.get("pid", "?")
        what = holder.get("command") or "a rig controller"
        run_dir = holder.get("run_dir")
        where = f", run folder {run_dir}" if run_dir else ""
        super().__init__(f"{key} is in use by {what} (PID {pid}{where}); only one controller may own a rig's devices")


def lock_dir() -> Path:
    """The folder of the lock files (shared by every user where the system allows it)."""
    override = os.environ.get(LOCK_DIR_ENV)
    if override:
        path = Path(override)
    elif _SYSTEM_LOCK_DIR.is_dir() and os.access(_SYSTEM_LOCK_DIR, os.W_OK):
        path = _SYSTEM_LOCK_DIR / "rig"
    else:
        path = Path(tempfile.gettempdir()) / "rig-locks"
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            path.chmod(0o1777)  # every user may lock, nobody may remove another's file
    return path


def _serial_key(port: str, usb_serial: str | None) -> list[str]:
    keys = []
    if usb_serial:
        keys.append(f"usb-serial:{usb_serial}")
    if "://" in port:  # socket://host:port, rfc2217://..., loop://: the URL names the link
        scheme, _, rest = port.partition("://")
        keys.append(f"{scheme.lower()}://{rest.lower().rstrip('/')}")
    else:
        keys.append(f"serial:{os.path.realpath(port)}")  # a by-id symlink and its target are one port
    return keys


_VISA_BOARD = re.compile(r"^(TCPIP|GPIB|USB|ASRL|VXI|GPIB-VXI|PXI)(\d*)::", re.IGNORECASE)


def visa_key(resource: str) -> str:
    """A VISA resource in one spelling: upper case, board 0 written out, the default ::INSTR class dropped."""
    text = resource.strip().upper()
    m = _VISA_BOARD.match(text)
    if m is not None and not m.group(2):
        text = f"{m.group(1)}0::{text[m.end():]}"
    if text.endswith("::INSTR"):
        text = text[: -len("::INSTR")]
    return f"visa:{text}"


def rig_lock_keys(cfg: RigConfig, *, socket_path: Path | None = None) -> list[str]:
    """Every key that identifies this rig's devices (and its operator socket)."""
    keys: list[str] = []
    used = {cfg.load_cell.bus, cfg.press.bus}
    for name in sorted(used):
        bus = cfg.buses[name]
        keys += _serial_key(bus.port, bus.usb_serial)
    keys.append(visa_key(cfg.potentiostat.resource))
    if socket_path is not None:
        keys.append(f"operator-socket:{os.path.realpath(socket_path)}")
    return sorted(set(keys))


def _file_for(key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[-48:]
    return lock_dir() / f"{digest}-{tail}.lock"


def read_holder(path: Path) -> dict[str, Any]:
    """What the holder wrote into a lock file (empty while it is being written)."""
    for _ in range(5):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):  # empty or half-written: the holder is writing it now
            time.sleep(0.02)
    return {}


@dataclass
class RigLock:
    """Exclusive locks on a set of keys, held until `release()` (or the process ends)."""

    keys: list[str]
    command: str
    run_dir: Path | None = None
    _fds: dict[str, int] = field(default_factory=dict, repr=False)

    def acquire(self) -> RigLock:
        """Take every key or none; raises `RigLocked` naming the holder of the first busy key."""
        try:
            for key in sorted(self.keys):
                path = _file_for(key)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        raise RigLocked(key, read_holder(path)) from None
                    raise
                self._fds[key] = fd
        except BaseException:
            self.release()
            raise
        self._write()
        return self

    def extend(self, keys: list[str]) -> None:
        """Take more keys (a simulator's devices, once it has started); raises `RigLocked`, keeping what is held."""
        more = RigLock([k for k in keys if k not in self._fds], command=self.command, run_dir=self.run_dir)
        more.acquire()
        self._fds.update(more._fds)
        self.keys = sorted({*self.keys, *more.keys})

    def set_run_dir(self, run_dir: Path) -> None:
        """Name the run folder in the lock files (once it exists)."""
        self.run_dir = run_dir
        self._write()

    def _write(self) -> None:
        info = json.dumps(
            {
                "pid": os.getpid(),
                "command": self.command,
                "run_dir": None if self.run_dir is None else str(self.run_dir.resolve()),
                "since_unix_s": round(time.time(), 3),
            }
        ).encode()
        for fd in self._fds.values():
            os.ftruncate(fd, 0)
            os.pwrite(fd, info, 0)

    def release(self) -> None:
        """Let go of every key held (the files stay: removing one could let two holders lock different files)."""
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            with contextlib.suppress(OSError):
                os.close(fd)


def lock_rig(cfg: RigConfig, *, command: str, socket_path: Path | None = None) -> RigLock:
    """Take the rig's lock (see the module docstring); raises `RigLocked`."""
    return RigLock(rig_lock_keys(cfg, socket_path=socket_path), command=command).acquire()


def run_locks() -> dict[str, dict[str, Any]]:
    """The run folders the lock files name, each with whether a controller holds its rig now: the holder's record
    (PID, command) while one does, {} when nobody holds it (the controller is gone: kill -9, a crash). A folder no
    lock file names (a run from before locks, or its files since taken by another run) is not in it."""
    found: dict[str, dict[str, Any]] = {}
    try:
        paths = list(lock_dir().glob("*.lock"))
    except OSError:
        return found
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
            info = json.loads(text) if text else None
        except (OSError, ValueError):
            continue
        if not isinstance(info, dict) or not isinstance(info.get("run_dir"), str):
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            found[info["run_dir"]] = info  # held: the controller is alive
        else:
            found.setdefault(info["run_dir"], {})
        finally:
            os.close(fd)
    return found

