"""A TCP listener carrying one simulated device's byte stream, with the connection-level `disconnect` fault.

Each device composes one `DeviceTcpServer` and hands it a per-connection coroutine. The server tracks every
connection task, so `close()` leaves no task behind. While `faults.disconnect` is set, open connections are
closed (the peer reads EOF) and new ones are accepted and closed at once (a USB replug in progress).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from hardware_sim.faults import Faults

ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class DeviceTcpServer:
    """Listens on `host` (port 0: any free port) and runs `handler` once per connection."""

    def __init__(
        self,
        *,
        name: str,
        handler: ConnectionHandler,
        faults: Faults,
        host: str = "127.0.0.1",
        port: int = 0,
        fault_poll_s: float = 0.01,
    ) -> None:
        self.name = name
        self.host = host
        self._requested_port = port
        self._handler = handler
        self._faults = faults
        self._fault_poll_s = fault_poll_s
        self._server: asyncio.Server | None = None
        self._watch: asyncio.Task[None] | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._closing = False
        self.port = 0
        self.accepted = 0  # connections served since start (a peer that opened the device at all)

    async def start(self) -> int:
        """Start listening; returns the bound port."""
        if self._server is not None:
            return self.port
        self._closing = False
        self._server = await asyncio.start_server(self._on_connect, self.host, self._requested_port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        loop = asyncio.get_running_loop()
        self._watch = loop.create_task(self._watch_faults(), name=f"{self.name}-fault-watch")
        return self.port

    async def close(self) -> None:
        """Stop listening, drop every connection and wait for all tasks to finish."""
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        tasks = list(self._connections)
        for writer in self._connections.values():
            writer.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def connection_count(self) -> int:
        """How many peers are connected now."""
        return len(self._connections)

    def drop_connections(self) -> None:
        """Close every open connection (the peer reads EOF)."""
        for writer in list(self._connections.values()):
            writer.close()

    async def _watch_faults(self) -> None:
        while True:
            await asyncio.sleep(self._fault_poll_s)
            if self._faults.disconnect and self._connections:
                self.drop_connections()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing or self._faults.disconnect:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            return
        task = asyncio.current_task()
        assert task is not None
        task.set_name(f"{self.name}-connection")
        self._connections[task] = writer
        self.accepted += 1
        try:
            await self._handler(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()
