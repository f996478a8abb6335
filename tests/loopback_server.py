"""A TCP server on a loopback port, in an event-loop thread of its own, that can stop and start again.

What the fault tests play a daemon with (`db_cable.Cable` in front of PostgreSQL, the proxy's
`RecordingUpstream`): to its clients a stopped daemon refuses connections and loses the ones it
had, and a restarted one listens on the same port again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopbackServer:
    """Subclasses answer connections in `handle`, add the writers they hold to `writers`, and
    call `listen` at the end of their __init__. `abort_on_drop`: reset dropped connections
    rather than close them."""

    abort_on_drop = False

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def listen(self) -> None:
        """Listen (again) on the same port, as a (re)started daemon."""

        async def listen() -> asyncio.Server:
            return await asyncio.start_server(self.handle, "127.0.0.1", self.port, reuse_address=True)

        self.server = self.call(listen())
        self.port = int(self.server.sockets[0].getsockname()[1])

    def drop(self) -> None:
        """Stop listening and lose every connection, as a stopped daemon."""

        async def drop() -> None:
            if self.server is not None:
                self.server.close()
                self.server = None
            for writer in list(self.writers):
                if self.abort_on_drop:
                    writer.transport.abort()
                else:
                    writer.close()

        self.call(drop())

    def close(self) -> None:
        self.drop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
