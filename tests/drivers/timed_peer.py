"""A scripted TCP peer whose replies arrive in timed pieces, for streaming-device tests.

`tests/support/expected_protocol.py` answers each request with one write, so it cannot show a reply whose
parts arrive apart in time (a streaming gauge's partial line, then its next line). This peer can: each
request is answered by a list of (delay_s, bytes) pieces.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

Piece = tuple[float, bytes]


@dataclass
class TimedPeer:
    """The running peer: its address and what went wrong."""

    port: int
    received: list[bytes] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def serial_url(self) -> str:
        """pyserial / pymodbus port string."""
        return f"socket://127.0.0.1:{self.port}"

    @property
    def visa_resource(self) -> str:
        """pyvisa-py raw-socket resource string."""
        return f"TCPIP0::127.0.0.1::{self.port}::SOCKET"


@contextlib.asynccontextmanager
async def timed_peer(
    script: Sequence[tuple[bytes, Sequence[Piece]]],
    *,
    read_timeout_s: float = 5.0,
    linger_s: float | None = None,
    port: int = 0,
) -> AsyncIterator[TimedPeer]:
    """Serve one connection that must send exactly the scripted requests; answer each with timed pieces.

    After the script the peer waits `linger_s` (default `read_timeout_s`) for the client to close and fails
    on any extra bytes; then it closes the connection itself. `port` reuses a known port (a device that comes
    back).
    """
    peer = TimedPeer(port=port)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for i, (request, pieces) in enumerate(script):
                try:
                    got = await asyncio.wait_for(reader.readexactly(len(request)), read_timeout_s)
                except (asyncio.IncompleteReadError, TimeoutError):
                    peer.errors.append(f"step {i}: expected {request!r}, it never came")
                    return
                peer.received.append(got)
                if got != request:
                    peer.errors.append(f"step {i}: expected {request!r} got {got!r}")
                    return
                for delay_s, data in pieces:
                    await asyncio.sleep(delay_s)
                    writer.write(data)
                    await writer.drain()
            with contextlib.suppress(TimeoutError, ConnectionError):
                wait_s = linger_s if linger_s is not None else read_timeout_s
                extra = await asyncio.wait_for(reader.read(1024), wait_s)
                if extra:
                    peer.errors.append(f"unexpected extra bytes after the script: {extra!r}")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            peer.done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
        try:
            await asyncio.wait_for(peer.done.wait(), read_timeout_s + 1.0)
        except TimeoutError:
            peer.errors.append("the conversation never finished (is the client still connected?)")
    finally:
        server.close()
        await server.wait_closed()
    assert not peer.errors, "protocol mismatch:\n" + "\n".join(peer.errors)
