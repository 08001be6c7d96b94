"""A local socket for operator commands to a running `rig run`: pause, resume, abort, ack, status.

The running process listens on a Unix socket (by default in the run's folder and linked from the rig's runtime
directory as `<rig name>.sock`); `rig pause|resume|abort|ack|status` send one JSON line and print the reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

Handler = Callable[[], Awaitable[dict[str, Any]]]
COMMANDS = ("pause", "resume", "abort", "ack", "status")


class SocketBusy(Exception):
    """Another controller answers on this operator socket: it is never taken over."""


def runtime_dir() -> Path:
    """Where the sockets of running rigs are linked (XDG_RUNTIME_DIR, else a per-user temp folder)."""
    base = os.environ.get("XDG_RUNTIME_DIR") or os.path.join(tempfile.gettempdir(), f"rig-{os.getuid()}")
    path = Path(base) / "rig"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_socket(rig_name: str) -> Path:
    """The well-known socket path of a rig by name."""
    return runtime_dir() / f"{rig_name}.sock"


class OperatorSocket:
    """Serves operator commands to handlers supplied by the engine."""

    def __init__(self, path: Path, handlers: dict[str, Handler], *, link: Path | None = None) -> None:
        unknown = set(handlers) - set(COMMANDS)
        if unknown:
            raise ValueError(f"unknown operator commands {sorted(unknown)}")
        self.path = path
        self.link = link
        self._handlers = handlers
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen (replacing a stale socket file left by a killed run, never a live one)."""
        if self.path.exists() or self.path.is_symlink():
            if answers(self.path):
                raise SocketBusy(f"another controller listens on {self.path}; it is never taken over")
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.path.resolve())

    async def close(self) -> None:
        """Stop listening and remove the socket files."""
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        for p in (self.link, self.path):
            if p is not None:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            line = await asyncio.wait_for(reader.readline(), 10.0)
            reply = await self._answer(line)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            cmd = req.get("cmd") if isinstance(req, dict) else None
        except json.JSONDecodeError:
            return {"ok": False, "error": "not a JSON line"}
        handler = self._handlers.get(cmd) if isinstance(cmd, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd!r}; known: {', '.join(self._handlers)}"}
        try:
            return {"ok": True, **await handler()}
        except Exception as exc:  # the reply carries the reason; the run goes on
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def answers(path: Path, *, timeout_s: float = 1.0) -> bool:
    """True when a process accepts connections on the socket `path` (a running controller)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def running_rigs() -> dict[str, Path]:
    """The rigs whose controllers listen in the runtime folder now, by name (socket file stem)."""
    return {p.stem: p for p in sorted(runtime_dir().glob("*.sock"), key=lambda p: p.stem) if answers(p)}


def send_command(path: Path, cmd: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """Send one operator command to a running rig (blocking) and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ConnectionError(f"no running rig listens on {path}") from exc
        s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    reply = json.loads(buf) if buf else {"ok": False, "error": "no reply"}
    if not isinstance(reply, dict):
        return {"ok": False, "error": f"bad reply {reply!r}"}
    return reply
