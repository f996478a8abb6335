"""The Authentication-Results milter session, driven as Postfix drives it (src/milter/milter8.c)."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Iterator
from pathlib import Path

import pytest
from service_harness import KEYRING, RunningService

from callout import milter_protocol as mp
from callout import milter_server
from callout.authresults import SpfCheck
from callout.decision import Rules
from callout.milter_server import MilterSession
from callout.service import VerificationService
from gateway.store import Store
from signed_sender import Policy

#: What Postfix offers in its SMFIC_OPTNEG (milter8.c, MILTER8_V6_PROTO_MASK and my_actions).
POSTFIX_ACTIONS = 0x1FF
POSTFIX_EVENTS = 0x1FFFFF
SMFIP_NOCONNECT, SMFIP_NOHELO = 0x01, 0x02


@pytest.fixture
def service(tmp_path: Path) -> Iterator[VerificationService]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    Store.upgrade(url)
    store = Store.open(url)
    verification = VerificationService(store, Rules(keyring=KEYRING, policy=Policy()))
    asyncio.run(verification.refresh())
    yield verification
    store.close()


class Postfix:
    """The MTA side: negotiates, then sends each event unless the filter asked to skip it, as
    milter8_event() does (`if (milter->ev_mask & skip_event_flag) return`)."""

    def __init__(self, session: MilterSession) -> None:
        self.session = session
        reply = session.respond(mp.Packet(mp.OPTNEG, struct.pack(">III", 6, POSTFIX_ACTIONS, POSTFIX_EVENTS)))
        _version, _actions, self.skip = struct.unpack(">III", reply[5:17])

    def event(self, command: bytes, data: bytes, skip_flag: int = 0) -> bytes:
        if self.skip & skip_flag:
            return b""
        reply = self.session.respond(mp.Packet(command, data))
        return reply if isinstance(reply, bytes) else asyncio.run(to_bytes(reply))

    def message(self, client: str, helo: str, sender: str, recipient: str) -> list[mp.Packet]:
        self.event(mp.CONNECT, b"client.example\x004\x04\x00" + client.encode() + b"\x00", SMFIP_NOCONNECT)
        self.event(mp.HELO, helo.encode() + b"\x00", SMFIP_NOHELO)
        self.event(mp.MAIL, f"<{sender}>\x00".encode())
        self.event(mp.RCPT, f"<{recipient}>\x00".encode())
        self.event(mp.EOH, b"")
        return mp.MilterParser().feed(self.event(mp.BODYEOB, b""))


async def to_bytes(reply: Awaitable[bytes]) -> bytes:
    return await reply


def inserted_header(packets: list[mp.Packet]) -> str:
    (inserted,) = [p for p in packets if p.command == mp.INSHEADER]
    name, value = inserted.data[4:].split(b"\0")[:2]
    return f"{name.decode()}: {value.decode()}"


def test_with_an_spf_check_the_milter_asks_for_the_client_and_adds_the_spf_result(
    service: VerificationService,
) -> None:
    asked: list[tuple[str, str, str]] = []

    def spf(client: str, sender: str, helo: str) -> str:
        asked.append((client, sender, helo))
        return "pass"

    check: SpfCheck = spf
    postfix = Postfix(MilterSession(service, "mx.example.ac.uk", check))
    header = inserted_header(postfix.message("192.0.2.1", "mail.other.org", "bob@other.org", "carol@example.ac.uk"))
    assert asked == [("192.0.2.1", "bob@other.org", "mail.other.org")]
    assert header == (
        "Authentication-Results: mx.example.ac.uk; x-signed-sender=none smtp.mailfrom=bob@other.org; "
        "spf=pass smtp.mailfrom=bob@other.org"
    )


def test_without_an_spf_check_the_milter_skips_the_connect_and_helo_steps(service: VerificationService) -> None:
    postfix = Postfix(MilterSession(service, "mx.example.ac.uk"))
    assert postfix.skip & (SMFIP_NOCONNECT | SMFIP_NOHELO) == SMFIP_NOCONNECT | SMFIP_NOHELO
    header = inserted_header(postfix.message("192.0.2.1", "mail.other.org", "bob@other.org", "carol@example.ac.uk"))
    assert header == "Authentication-Results: mx.example.ac.uk; x-signed-sender=none smtp.mailfrom=bob@other.org"


def test_a_client_sending_endless_recipients_does_not_grow_the_session(service: VerificationService) -> None:
    # The milter port is open to every local process; each packet may carry up to 1 MiB.
    session = MilterSession(service, "mx.example.ac.uk")
    session.respond(mp.Packet(mp.MAIL, b"<bob@other.org>\0"))
    recipient = mp.Packet(mp.RCPT, b"<" + b"r" * (256 * 1024) + b"@example.ac.uk>\0")
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(64):  # 16 MiB of recipients
            session.respond(recipient)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 2 * 1024 * 1024
    header = inserted_header(mp.MilterParser().feed(session.respond(mp.Packet(mp.BODYEOB, b""))))
    assert header == "Authentication-Results: mx.example.ac.uk; x-signed-sender=none smtp.mailfrom=bob@other.org"


def read_packets(sock: socket.socket, command: bytes) -> list[mp.Packet]:
    """Packets from the milter up to and including the first `command`."""
    parser, got = mp.MilterParser(), []
    while not any(p.command == command for p in got):
        chunk = sock.recv(65536)
        assert chunk, "closed by the milter"
        got += parser.feed(chunk)
    return got


def test_a_slow_spf_lookup_holds_up_no_other_connection(running_service: RunningService) -> None:
    # pyspf asks DNS synchronously, for seconds when a sender's domain wants it so.
    released = threading.Event()

    def slow_spf(ip: str, sender: str, helo: str) -> str:
        released.wait(5)
        return "pass"

    port = running_service.listen(
        "milter", milter_server.session_factory(running_service.service, "mx.example.ac.uk", slow_spf)
    )
    optneg = mp.encode(mp.OPTNEG, struct.pack(">III", 6, POSTFIX_ACTIONS, POSTFIX_EVENTS))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as message:
        message.sendall(
            optneg
            + mp.encode(mp.CONNECT, b"client.example\x004\x04\x00192.0.2.1\x00")
            + mp.encode(mp.HELO, b"mail.other.org\x00")
            + mp.encode(mp.MAIL, b"<bob@other.org>\x00")
            + mp.encode(mp.RCPT, b"<carol@example.ac.uk>\x00")
            + mp.encode(mp.EOH)
            + mp.encode(mp.BODYEOB)
        )
        time.sleep(0.2)  # the message is in its SPF lookup
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as other:
                other.sendall(optneg)
                assert read_packets(other, mp.OPTNEG)[0].command == mp.OPTNEG
        finally:
            released.set()
        assert inserted_header(read_packets(message, mp.INSHEADER)) == (
            "Authentication-Results: mx.example.ac.uk; x-signed-sender=none smtp.mailfrom=bob@other.org; "
            "spf=pass smtp.mailfrom=bob@other.org"
        )
