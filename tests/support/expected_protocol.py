"""An async analogue of PyMeasure's `expected_protocol`: a scripted peer on a real TCP socket.

The peer expects exactly the listed request bytes, in order, and answers each with the listed reply bytes
(or nothing when the reply is None). Drivers reach it through their ordinary transports:
`socket://127.0.0.1:PORT` for pyserial/pymodbus, `TCPIP0::127.0.0.1::PORT::SOCKET` for pyvisa-py.
Leaving the block checks that the whole conversation happened and nothing else was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field


@dataclass
class ScriptedPeer:
    """The running peer: its address and what it saw."""

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
async def expected_protocol(
    conversation: Sequence[tuple[bytes, bytes | None]],
    *,
    read_timeout_s: float = 5.0,
    check_extra_s: float = 0.05,
) -> AsyncIterator[ScriptedPeer]:
    """Serve one connection that must carry exactly `conversation`; fail on any difference."""
    peer = ScriptedPeer(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for i, (request, reply) in enumerate(conversation):
                try:
                    got = await asyncio.wait_for(reader.readexactly(len(request)), read_timeout_s)
                except asyncio.IncompleteReadError as exc:
                    peer.errors.append(f"step {i}: connection closed after {exc.partial!r}, expected {request!r}")
                    return
                except TimeoutError:
                    peer.errors.append(f"step {i}: nothing (or too little) arrived, expected {request!r}")
                    return
                peer.received.append(got)
                if got != request:
                    peer.errors.append(f"step {i}: expected {request.hex(' ')} got {got.hex(' ')}")
                    return
                if reply:
                    writer.write(reply)
                    await writer.drain()
            with contextlib.suppress(TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                extra = await asyncio.wait_for(reader.read(1024), check_extra_s)
                if extra:
                    peer.errors.append(f"unexpected extra bytes after the script: {extra!r}")
        finally:
            peer.done.set()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
        if conversation:
            try:
                await asyncio.wait_for(peer.done.wait(), read_timeout_s + check_extra_s + 1.0)
            except TimeoutError:
                peer.errors.append("the conversation never finished")
    finally:
        server.close()
        await server.wait_closed()
    if len(peer.received) < len(conversation) and not peer.errors:
        peer.errors.append(f"only {len(peer.received)} of {len(conversation)} requests arrived")
    assert not peer.errors, "protocol mismatch:\n" + "\n".join(peer.errors)
