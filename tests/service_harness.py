"""A real verification service in a background event loop, and blocking loopback clients.

Tests talk to the service as the MTAs do, over loopback sockets, from ordinary synchronous code.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from callout.decision import Rules
from callout.exchange import Exchanges, serve
from callout.service import VerificationService
from gateway import eventloop
from gateway.store import Store
from signed_sender import Key, Keyring

T = TypeVar("T")
KEYRING = Keyring([Key(0, b"k" * 32)], 0)


class RunningService:
    def __init__(self, store: Store, rules: Rules, refresh_seconds: float = 0.2) -> None:
        self.store = store
        self.rules = rules
        self.keyring = rules.keyring
        self.loop = eventloop.new_event_loop()  # the loop `antiforgery serve` runs on
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.service = VerificationService(store, rules, refresh_seconds=refresh_seconds)
        self.servers: list[asyncio.Server] = []

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> RunningService:
        self.call(self.service.start())
        return self

    def listen(self, name: str, session: Exchanges) -> int:
        """Start an adapter on a free loopback port and return the port."""
        server = self.call(serve(name, "127.0.0.1", 0, session))
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        async def shutdown() -> None:
            for server in self.servers:
                server.close()
            await self.service.stop()

        try:
            self.call(shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            self.store.close()


class LineClient:
    """A blocking loopback client for the line and netstring protocols."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until(self, terminator: bytes) -> bytes:
        while terminator not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed by server; had {self.buffer!r}")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(terminator)
        return head

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
