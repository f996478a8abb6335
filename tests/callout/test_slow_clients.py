"""Slow clients of the line adapters (issue 7, "Faults"): they hold nobody else up, and get no half answer.

Postfix keeps its policy and socketmap connections open and idle between requests, so a quiet
connection is normal; what must not happen is that a client trickling a request a byte at a time
delays other clients, or that anything is answered before the request is complete. A silent
client is dropped after the idle time (`callout.exchange`, `idle_seconds`), and so is one that
takes that long to send one request, however often it sends a byte.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from adapter_support import NetstringClient
from service_harness import KEYRING, LineClient, RunningService

from callout import policy_server, socketmap_server
from callout.decision import Rules
from callout.exchange import serve
from callout.netstring import encode
from gateway.store import Mode, Store
from signed_sender import Policy

POLICY_REQUEST = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=alice@example.ac.uk\nrecipient=x@other.org\n\n"
)
TRICKLE = 0.02


@pytest.fixture
def adapters(sqlite_url: str) -> Iterator[dict[str, int]]:
    """Policy and socketmap adapters with a 1 s idle time (the database makes no difference here)."""
    Store.upgrade(sqlite_url)
    store = Store.open(sqlite_url)
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    running = RunningService(store, Rules(keyring=KEYRING, policy=Policy())).start()
    ports = {}
    for name, exchanges in (
        ("policy", policy_server.session_factory(running.service)),
        ("socketmap", socketmap_server.session_factory(running.service)),
    ):
        server = running.call(serve(name, "127.0.0.1", 0, exchanges, idle_seconds=1.0))
        running.servers.append(server)
        ports[name] = int(server.sockets[0].getsockname()[1])
    yield ports
    running.stop()


class Trickler(threading.Thread):
    """Sends all but the last byte of `request` one byte at a time, then waits; records any reply."""

    def __init__(self, port: int, request: bytes, seconds: float) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.request = request
        self.seconds = seconds
        self.received = b""
        self.closed = False

    def run(self) -> None:
        self.sock.settimeout(TRICKLE)
        deadline = time.monotonic() + self.seconds
        sent = 0
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                if sent < len(self.request) - 1:
                    try:
                        self.sock.sendall(self.request[sent : sent + 1])
                    except OSError:
                        self.closed = True
                        return
                    sent += 1
                continue
            except OSError:
                self.closed = True
                return
            if not chunk:
                self.closed = True
                return
            self.received += chunk

    def stop(self) -> None:
        self.join(10)
        self.sock.close()


def test_trickling_clients_do_not_hold_up_a_normal_one_and_get_no_half_answer(adapters: dict[str, int]) -> None:
    long_request = POLICY_REQUEST.replace(b"sender=", b"client_name=" + b"x" * 60 + b"\nsender=")
    slow = [Trickler(adapters["policy"], long_request, seconds=0.8) for _ in range(3)]
    slow += [Trickler(adapters["socketmap"], encode(b"verify " + b"a" * 60 + b"@example.ac.uk"), 0.8) for _ in range(3)]
    for client in slow:
        client.start()
    time.sleep(0.1)  # they are mid-request now
    policy = LineClient(adapters["policy"])
    socketmap = NetstringClient(adapters["socketmap"])
    try:
        for _ in range(20):
            policy.send(POLICY_REQUEST)
            assert policy.read_until(b"\n\n").startswith(b"action=550 5.7.1")
            assert socketmap.lookup("verify", "alice@example.ac.uk").startswith("OK 550 5.7.1")
        assert not any(client.closed for client in slow), "a slow client was dropped while it was sending"
    finally:
        policy.close()
        socketmap.close()
        for client in slow:
            client.stop()
    assert all(client.received == b"" for client in slow)  # nothing answered before the request was whole


def test_a_client_silent_in_the_middle_of_a_request_is_dropped_unanswered(adapters: dict[str, int]) -> None:
    for name, half in (("policy", POLICY_REQUEST[:40]), ("socketmap", encode(b"verify alice@example.ac.uk")[:12])):
        client = LineClient(adapters[name])
        client.send(half)
        started = time.monotonic()
        assert client.closed_by_server(), name  # recv returns b"" once the idle time is over
        assert time.monotonic() - started < 4.0
        client.close()


def test_a_trickling_client_is_dropped_after_a_request_deadline(adapters: dict[str, int]) -> None:
    endless = b"request=smtpd_access_policy\nclient_name=" + b"x" * 10_000
    slow = Trickler(adapters["policy"], endless, seconds=3.0)  # a byte every 20 ms for three idle times
    slow.start()
    slow.join(10)
    try:
        assert slow.closed, "a client sending a byte at a time held its connection for three idle times"
        assert slow.received == b""
    finally:
        slow.sock.close()
