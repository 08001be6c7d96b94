"""A simulator started for one controller (`rig run --sim`) is never left running unattended.

It watches its controller's process. When that process is gone (killed, crashed, the PC's session closed), the
simulated rig goes on exactly as a real one would: the 2450 keeps sourcing whatever current it was set to, the
press holds, the cell keeps plating. For a grace period (default 10 min of wall time) a new controller may attach
(`rig resume RUN` sends `{"cmd": "attach", "pid": N}` to the control port) and take the rig over; after it, with
nobody attached, the simulator exits. A simulator started by hand (`rig sim`) has no controller and is not watched.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _proc_identity(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc, or None when it does not exist; ("?", "") without /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ("?", "")
    return fields[0], fields[19]  # state; starttime (field 22 of stat, counted after the name)


@dataclass
class _Controller:
    pid: int
    start: str


class ControllerWatch:
    """Exits the simulator (`on_expired`) once no controller process has been alive for `grace_s` wall seconds."""

    def __init__(
        self,
        pid: int | None,
        *,
        grace_s: float,
        on_expired: Callable[[], None],
        log: Callable[[str], None] = print,
        poll_s: float = 0.2,
    ) -> None:
        self.grace_s = grace_s
        self._on_expired = on_expired
        self._log = log
        self._poll_s = poll_s
        self._controller: _Controller | None = None
        self.orphaned_since: float | None = None  # wall monotonic time the controller was found gone
        self.watched = pid is not None
        if pid is not None:
            self.attach(pid)

    def attach(self, pid: int) -> dict[str, object]:
        """A controller takes the rig over; returns how long the rig had been unattended."""
        ident = _proc_identity(pid)
        if ident is None or ident[0] == "Z":
            raise ValueError(f"no running process {pid}")
        unattended = None if self.orphaned_since is None else time.monotonic() - self.orphaned_since
        previous = None if self._controller is None else self._controller.pid
        self._controller = _Controller(pid, ident[1])
        self.orphaned_since = None
        self.watched = True
        self._log(f"controller PID {pid} attached" + (f" after {unattended:.1f} s unattended" if unattended else ""))
        return {"pid": pid, "previous_pid": previous, "unattended_s": unattended}

    def alive(self) -> bool:
        """True while the attached controller process exists (and is not a zombie or a reused PID)."""
        c = self._controller
        if c is None:
            return False
        ident = _proc_identity(c.pid)
        return ident is not None and ident[0] != "Z" and (ident[1] == c.start or not c.start)

    def status(self) -> dict[str, object]:
        """For the control port's `state`: who is attached, and since when the rig is unattended."""
        unattended = None if self.orphaned_since is None else time.monotonic() - self.orphaned_since
        return {
            "controller_pid": None if self._controller is None else self._controller.pid,
            "unattended_s": unattended,
            "grace_s": self.grace_s if self.watched else None,
        }

    def check(self) -> bool:
        """One look; True once the grace period has run out (and `on_expired` was called)."""
        if not self.watched:
            return False
        if self.alive():
            return False
        now = time.monotonic()
        if self.orphaned_since is None:
            self.orphaned_since = now
            pid = None if self._controller is None else self._controller.pid
            self._log(
                f"controller PID {pid} is gone; the rig goes on as it is (a sourcing output keeps sourcing); "
                f"waiting {self.grace_s:g} s for a controller to attach (rig resume RUN), then exiting"
            )
            self._controller = None
        if now - self.orphaned_since >= self.grace_s:
            self._log(f"no controller attached within {self.grace_s:g} s: the simulator exits")
            self._on_expired()
            return True
        return False

    async def run(self) -> None:
        """Look every `poll_s` until the grace period runs out."""
        # a poll: another process's life has no event to wait on here (a pidfd would need Linux 5.3 and Python 3.12)
        while not self.check():  # noqa: ASYNC110
            await asyncio.sleep(self._poll_s)
