"""A real submission proxy in a background event loop, and the clients and upstreams the tests drive it with.

As `service_harness.RunningService`: the proxy and its directory run on their own loop thread;
tests talk to it over loopback sockets from ordinary synchronous code (smtplib, or a raw socket
where smtplib would tidy up what the test means to send).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import re
import smtplib
import socket
import ssl
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from service_harness import KEYRING

from gateway import eventloop, passwords
from gateway.directory import Directory
from gateway.store import Store
from gateway.store.records import Mode
from gateway.submission.auth import StoreAuthenticator
from gateway.submission.limits import Limits
from gateway.submission.proxy import SubmissionHandler
from gateway.submission.tls import make_self_signed, server_context
from signed_sender import Policy

T = TypeVar("T")
PASSWORD = "correct horse battery staple"
HOSTNAME = "smtp.example.ac.uk"
FAST_LIMITS = Limits(auth_failure_delay=0.05)


def add_users(store: Store) -> None:
    """alice is protected (full), bob is not (off); alice subscribes to a list with a fixed tag."""
    hashed = passwords.hash_password(PASSWORD)
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL, password_hash=hashed)
    store.add_user("bob", "bob@example.ac.uk", mode=Mode.OFF, password_hash=hashed)
    store.add_fixed_tag("alice", "list@lists.example.org")


class RunningProxy:
    def __init__(self, store: Store, upstream_port: int, workdir: Path, **options: Any) -> None:
        self.store = store
        self.loop = eventloop.new_event_loop()  # the loop `antiforgery serve` runs on
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.directory = Directory(store, refresh_seconds=0.2)
        cert, key = workdir / "tls.crt", workdir / "tls.key"
        if not cert.exists():
            make_self_signed(cert, key, HOSTNAME, dt.datetime.now(dt.UTC))
        options.setdefault("limits", FAST_LIMITS)
        options.setdefault("upstream_timeout", 5.0)
        options.setdefault("upstream_data_timeout", 10.0)
        self.handler = SubmissionHandler(
            self.directory,
            KEYRING,
            Policy(),
            options.pop("authenticator", None) or StoreAuthenticator(store),
            upstream=("127.0.0.1", upstream_port),
            hostname=HOSTNAME,
            tls_context=server_context(cert, key),
            **options,
        )
        self.call(self.directory.start())
        self.server = self.call(self.handler.listen("127.0.0.1", 0))
        self.port = int(self.server.sockets[0].getsockname()[1])

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def refresh(self) -> None:
        self.call(self.directory.refresh())

    def connect(
        self, *, tls: bool = True, login: str | None = "alice", timeout: float = 30.0, source: str = "127.0.0.1"
    ) -> smtplib.SMTP:
        client = smtplib.SMTP(
            "127.0.0.1", self.port, local_hostname="laptop.example.org", timeout=timeout, source_address=(source, 0)
        )
        client.ehlo()
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            client.starttls(context=context)
            client.ehlo()
        if login is not None:
            client.login(login, PASSWORD)
        return client

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            await self.handler.close()  # QUITs the pooled upstream connections, as `serve` does
            await self.directory.stop()

        try:
            self.call(shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


class RawClient:
    """SMTP by hand over TLS, for bytes smtplib would normalise (bare CR and LF in DATA)."""

    def __init__(self, port: int, login: str = "alice") -> None:
        plain = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock: socket.socket = plain
        self.buffer = b""
        self.expect(220)
        self.command(b"EHLO raw.example.org", 250)
        self.command(b"STARTTLS", 220)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(plain)
        self.command(b"EHLO raw.example.org", 250)
        token = base64.b64encode(f"\0{login}\0{PASSWORD}".encode()).decode()
        self.command(f"AUTH PLAIN {token}".encode(), 235)

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; had {self.buffer!r}")
                self.buffer += chunk
            line, _, self.buffer = self.buffer.partition(b"\r\n")
            lines.append(line.decode())
            if re.match(r"\d{3} ", line.decode() + " ") and line[3:4] != b"-":
                return int(lines[-1][:3]), "\n".join(lines)

    def expect(self, code: int) -> str:
        got, text = self.reply()
        assert got == code, text
        return text

    def command(self, line: bytes, code: int) -> str:
        self.sock.sendall(line + b"\r\n")
        return self.expect(code)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()
