"""The simulator's control port: JSON lines over TCP, for fault injection and ground truth from another process.

Requests and replies are one JSON object per line:
  {"cmd": "state"}                                         -> {"ok": true, "state": {...model ground truth...}}
  {"cmd": "endpoints"}                                     -> {"ok": true, "endpoints": {...}}
  {"cmd": "faults"}                                        -> {"ok": true, "faults": {"loadcell": {...}, ...}}
  {"cmd": "fault", "device": "loadcell", "set": {"no_reply": true}}
  {"cmd": "clear"} or {"cmd": "clear", "device": "stepper"}
  {"cmd": "speed", "value": 100}
  {"cmd": "attach", "pid": 1234}      (a controller takes the rig over: hardware_sim.controller_watch)
  {"cmd": "shutdown"}                 (the simulator exits, as on SIGTERM)
`attach` and `shutdown` exist where the simulator was started for a controller (`add_command`).
Errors come back as {"ok": false, "error": "..."}; the connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable, Mapping
from typing import Any

from hardware_sim.faults import Faults


class ControlPort:
    """Serves the control protocol for one simulated rig."""

    def __init__(
        self,
        *,
        faults: Mapping[str, Faults],
        state: Callable[[], dict[str, Any]],
        endpoints: Callable[[], dict[str, str]],
        set_speed: Callable[[float], None],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._faults = faults
        self._state = state
        self._endpoints = endpoints
        self._set_speed = set_speed
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self._commands: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}

    def add_command(self, name: str, handler: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        """Serve one more command: `handler(request)` returns the reply's fields (raise ValueError to refuse)."""
        self._commands[name] = handler

    @property
    def address(self) -> str:
        """host:port of the running control port."""
        return f"{self._host}:{self._port}"

    async def start(self) -> int:
        """Start serving; returns the bound port."""
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        return self._port

    async def close(self) -> None:
        """Stop serving and drop open connections."""
        if self._server is not None:
            self._server.close()
            for task in list(self._conns):
                task.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while line := await reader.readline():
                reply = self.handle_line(line)
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    def handle_line(self, line: bytes) -> dict[str, Any]:
        """Answer one request line."""
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("a request is a JSON object")
            return {"ok": True, **self.handle(req)}
        except (ValueError, KeyError, TypeError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer one decoded request."""
        cmd = req.get("cmd")
        if cmd == "state":
            return {"state": self._state()}
        if cmd == "endpoints":
            return {"endpoints": self._endpoints()}
        if cmd == "faults":
            return {"faults": {name: f.active() for name, f in self._faults.items()}}
        if cmd == "fault":
            device = self._device(req)
            values = req.get("set")
            if not isinstance(values, dict):
                raise TypeError("'set' must be an object of fault names to values")
            self._faults[device].set(**values)
            return {"faults": {device: self._faults[device].active()}}
        if cmd == "clear":
            names = [self._device(req)] if req.get("device") else list(self._faults)
            for name in names:
                self._faults[name].clear()
            return {}
        if cmd == "speed":
            value = req.get("value")
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"speed must be a number > 0, got {value!r}")
            self._set_speed(float(value))
            return {}
        if isinstance(cmd, str) and cmd in self._commands:
            return self._commands[cmd](req)
        known = ", ".join(["state", "endpoints", "faults", "fault", "clear", "speed", *self._commands])
        raise ValueError(f"unknown command {cmd!r}; known: {known}")

    def _device(self, req: dict[str, Any]) -> str:
        device = req.get("device")
        if device not in self._faults:
            raise KeyError(f"unknown device {device!r}; known: {sorted(self._faults)}")
        return str(device)


def control_request(address: str, request: dict[str, Any], *, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to a control port at 'host:port' (blocking) and return the reply."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s) as sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"control port {address} closed without a reply")
            buf += chunk
    reply = json.loads(buf)
    if not isinstance(reply, dict):
        raise ValueError(f"control port {address} sent {reply!r}")
    return reply
