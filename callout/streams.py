"""What every line-oriented adapter server shares: start, idle timeout, and closing cleanly.

Each adapter is a function `session(reader, writer)`; this module only runs it on a socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger("antiforgery.server")

T = TypeVar("T")
Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

#: A client silent this long is dropped; Postfix's own policy client gives up after 100 s.
IDLE_SECONDS = 300.0
READ_CHUNK = 8192


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """Next bytes from the peer, or b"" when it closed or stayed idle too long."""
    try:
        # asyncio.timeout, not wait_for: wait_for wraps each read in a new task, a measurable part
        # of a request's CPU (issue 7).
        async with asyncio.timeout(IDLE_SECONDS):
            return await reader.read(READ_CHUNK)
    except (TimeoutError, ConnectionError):
        return b""


class CloseConnection(Exception):
    """Raised by a responder to end the session, as a protocol's QUIT does."""


async def answer_each(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    feed: Callable[[bytes], list[T]],
    respond: Callable[[T], bytes | Awaitable[bytes]],
) -> None:
    """Answer each request in order until the peer closes, goes idle, or breaks the protocol.

    A ValueError from `feed` (every parser's protocol error is one) ends the session without a
    reply: for these protocols, closing is the only error signal the peer understands. A
    responder may be async (one that calls forward); replies still go out in request order.
    """
    while data := await read_chunk(reader):
        try:
            requests = feed(data)
        except ValueError:
            return
        for request in requests:
            try:
                reply = respond(request)
                writer.write(await reply if inspect.isawaitable(reply) else reply)
            except CloseConnection:
                await writer.drain()
                return
        await writer.drain()


async def serve(name: str, host: str, port: int, session: Session) -> asyncio.Server:
    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await session(reader, writer)
        except ConnectionError:
            pass
        except Exception:
            log.exception("%s: session failed", name)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(guarded, host, port, reuse_address=True)
    log.info("%s listening on %s", name, ", ".join(str(s.getsockname()) for s in server.sockets))
    return server
