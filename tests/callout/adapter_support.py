"""What the socketmap, readsocket and HTTP adapter tests share: an unreachable store, a netstring client."""

from __future__ import annotations

import socket

from service_harness import KEYRING, RunningService

from callout.decision import Rules
from callout.netstring import NetstringParser, encode
from gateway.store import Store
from signed_sender import Policy

#: Nothing listens on port 1: the service starts without a snapshot and must defer everything.
UNREACHABLE_URL = "postgresql+psycopg://nobody@127.0.0.1:1/none"


def unreachable_service() -> RunningService:
    """A started service whose store was unreachable at start; the caller stops it."""
    store = Store.open(UNREACHABLE_URL, check_schema=False)
    return RunningService(store, Rules(keyring=KEYRING, policy=Policy())).start()


class NetstringClient:
    """A blocking socketmap client: one netstring out, one netstring back, as Postfix does."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.parser = NetstringParser()
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        while not self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by server")
            self.pending += self.parser.feed(chunk)
        return self.pending.pop(0).decode()

    def lookup(self, name: str, key: str) -> str:
        self.send(encode(f"{name} {key}".encode()))
        return self.reply()

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
