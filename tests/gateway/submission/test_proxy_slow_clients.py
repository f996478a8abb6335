"""Slow clients (issue 7, "Faults"): a trickle of bytes cannot hold a session, or anyone else's.

Each slow client here sends a byte every TRICKLE seconds, far more often than the idle timeout,
so only a deadline, never an idle timer, can stop it: in a command line, in an AUTH exchange, in
the message data. Each gets `421 4.4.2` and is closed; the upstream never sees a DATA for a cut-off
message; and a normal client is served while the slow ones are still connected.
"""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable

import pytest
from proxy_harness import PASSWORD, RunningProxy
from recording_upstream import RecordingUpstream

from gateway.store import Store
from gateway.submission.limits import DataDeadline, Limits

StartProxy = Callable[..., RunningProxy]
MESSAGE = b"From: alice@example.ac.uk\r\nTo: bob@other.org\r\nSubject: quick\r\n\r\nHello.\r\n"
TRICKLE = 0.02  # seconds between the slow clients' bytes
GIVE_UP = 20.0  # a slow client still connected after this long was never cut off


class SlowClient(threading.Thread):
    """Logs in over TLS, goes as far as `phase`, then trickles `trickle` a byte at a time, forever.

    `phase` is where the trickle happens: "command" (a MAIL line that never ends), "auth" (the
    answer to AUTH LOGIN's username challenge), "data" (message lines after DATA's 354: each line
    ends, so an idle timer reset per line would never fire).
    """

    def __init__(self, port: int, phase: str, recipient: str = "slow@other.org") -> None:
        super().__init__(daemon=True)
        self.port = port
        self.phase = phase
        self.recipient = recipient
        self.ready = threading.Event()  # set when the trickle starts
        self.sent = 0
        self.longest_gap = 0.0  # the longest the client went without sending a byte
        self.received = b""
        self.closed_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            sock = self._prepare()
            self.ready.set()
            self._trickle(sock)
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
            self.ready.set()

    def _prepare(self) -> ssl.SSLSocket:
        plain = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self._expect(plain, b"220")
        self._say(plain, b"EHLO slow.example.org", b"250 ")
        self._say(plain, b"STARTTLS", b"220")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(plain)
        self._say(sock, b"EHLO slow.example.org", b"250 ")
        if self.phase == "auth":
            self._say(sock, b"AUTH LOGIN", b"334")
            return sock
        token = base64.b64encode(f"\0alice\0{PASSWORD}".encode())
        self._say(sock, b"AUTH PLAIN " + token, b"235")
        if self.phase == "data":
            self._say(sock, b"MAIL FROM:<alice@example.ac.uk>", b"250")
            self._say(sock, f"RCPT TO:<{self.recipient}>".encode(), b"250")
            self._say(sock, b"DATA", b"354")
        return sock

    def _trickle(self, sock: ssl.SSLSocket) -> None:
        pattern = {
            "command": b"MAIL FROM:<alice@example.ac.uk" + b"x" * 10_000,
            "auth": base64.b64encode(b"alice" * 10_000),
            "data": b"Subject: slow\r\n\r\n" + b"half a message\r\n" * 10_000,
        }[self.phase]
        sock.settimeout(TRICKLE)
        deadline = time.monotonic() + GIVE_UP
        last = time.monotonic()
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                try:
                    sock.sendall(pattern[self.sent : self.sent + 1])
                except OSError:
                    break  # closed under us: read what it said
                self.sent += 1
                self.longest_gap = max(self.longest_gap, time.monotonic() - last)
                last = time.monotonic()
                continue
            except OSError:
                break
            if not chunk:
                break
            self.received += chunk
        self.closed_at = time.monotonic()
        sock.settimeout(1)
        try:
            while chunk := sock.recv(4096):
                self.received += chunk
        except OSError:
            pass
        sock.close()

    def _expect(self, sock: socket.socket, code: bytes) -> None:
        reply = b""
        while not reply.endswith(b"\r\n") or reply.split(b"\r\n")[-2][3:4] == b"-":
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"closed; had {reply!r}")
            reply += chunk
        assert reply.split(b"\r\n")[-2].startswith(code), reply

    def _say(self, sock: socket.socket, line: bytes, code: bytes) -> None:
        sock.sendall(line + b"\r\n")
        self._expect(sock, code)


def start_slow(port: int, *phases: str) -> list[SlowClient]:
    clients = [SlowClient(port, phase, recipient=f"slow{i}@other.org") for i, phase in enumerate(phases)]
    for client in clients:
        client.start()
    for client in clients:
        assert client.ready.wait(10) and client.error is None, client.error
    return clients


def cut_off(client: SlowClient) -> bytes:
    client.join(GIVE_UP + 5)
    assert client.error is None, client.error
    assert client.closed_at is not None
    return client.received


@pytest.mark.parametrize(
    ("phase", "reply"),
    [
        ("command", b"421 4.4.2 smtp.example.ac.uk Idle timeout; closing connection\r\n"),
        ("auth", b"421 4.4.2 smtp.example.ac.uk Idle timeout; closing connection\r\n"),
        ("data", b"421 4.4.2 smtp.example.ac.uk Message data too slow; closing connection\r\n"),
    ],
)
def test_a_trickling_client_is_cut_off_by_the_deadline_not_held_by_its_bytes(
    phase: str, reply: bytes, users: Store, upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(users, upstream.port, limits=Limits(idle_timeout=0.5, data_min_rate=1000))
    [slow] = start_slow(proxy.port, phase)
    assert cut_off(slow) == reply
    assert slow.sent >= 5 and slow.longest_gap < 0.25  # it never fell silent for anything like 0.5 s
    assert "DATA" not in upstream.verbs() and upstream.messages == []


def test_slow_clients_do_not_hold_up_a_normal_submission_and_none_of_theirs_is_relayed(
    users: Store, upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(users, upstream.port, limits=Limits(idle_timeout=3.0, data_min_rate=1000))
    slow = start_slow(proxy.port, "command", "command", "auth", "auth", "data", "data")
    with proxy.connect() as client:
        client.sendmail("alice@example.ac.uk", ["bob@other.org"], MESSAGE)
    assert all(s.closed_at is None for s in slow), "a slow client was cut off before the normal one was served"
    assert [m.recipients for m in upstream.messages] == [["bob@other.org"]]
    for each in slow:
        assert cut_off(each).startswith(b"421 4.4.2 ")
    # The slow DATA clients' upstream transactions were opened at RCPT and then abandoned.
    assert {"RCPT TO:<slow4@other.org>", "RCPT TO:<slow5@other.org>"} <= set(upstream.commands)
    assert upstream.verbs().count("DATA") == 1 and len(upstream.messages) == 1
    assert b"half a message" not in upstream.messages[0].data


def test_a_slow_but_steady_message_is_not_cut_off(
    users: Store, upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    """The deadline is a minimum rate, not a cap: a message that takes three idle timeouts but
    comes at twice the minimum rate is received and relayed whole."""
    proxy = start_proxy(users, upstream.port, limits=Limits(idle_timeout=0.5, data_min_rate=400))
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        client.rcpt("bob@other.org")
        assert client.docmd("DATA")[0] == 354
        client.send(b"Subject: steady\r\n\r\n")
        for _ in range(30):  # 80 octets every 0.05 s: 1600 octets/s, for 1.5 s
            client.send(b"x" * 78 + b"\r\n")
            time.sleep(0.05)
        client.send(b".\r\n")
        assert client.getreply()[0] == 250
    [message] = upstream.messages
    assert message.data.count(b"x" * 78) == 30


def test_a_client_that_stops_mid_message_is_cut_off_and_its_part_not_relayed(
    users: Store, upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(users, upstream.port, limits=Limits(idle_timeout=0.5))
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        client.rcpt("bob@other.org")
        assert client.docmd("DATA")[0] == 354
        client.send(b"Subject: half\r\n\r\nthe first half\r\n")
        assert client.getreply() == (421, b"4.4.2 smtp.example.ac.uk Message data too slow; closing connection")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
    assert "DATA" not in upstream.verbs() and upstream.messages == []


def test_the_data_deadline_grows_with_the_octets_up_to_the_limit() -> None:
    deadline = DataDeadline.start(limit=300.0, min_rate=500, now=1000.0)
    assert deadline.at == 1300.0
    assert deadline.received(500, now=1001.0) == 300.0  # a second's worth in a second: capped at the limit
    assert deadline.received(1, now=1100.0) == pytest.approx(201.002)  # one octet in 99 s: time runs out
    assert deadline.received(5_000_000, now=1101.0) == 300.0  # never more than the limit ahead
    trickle = DataDeadline.start(limit=300.0, min_rate=500, now=0.0)
    left = {t: trickle.received(1, now=float(t)) for t in range(1, 1000)}
    assert min(t for t, seconds in left.items() if seconds <= 0) == 301  # a byte a second buys 2 ms a second


def test_a_refused_message_leaves_the_client_a_whole_idle_time_for_its_next_command(
    users: Store, upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    """The data deadline's timer must not outlive the data: after a 552 the client has the idle
    time again, not what was left of the deadline."""
    limits = Limits(idle_timeout=1.0, data_min_rate=1_000_000, max_message_size=500)
    proxy = start_proxy(users, upstream.port, limits=limits)
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        client.rcpt("bob@other.org")
        assert client.docmd("DATA")[0] == 354
        for _ in range(8):  # 0.8 s of the 1 s deadline; rate so high that data buys no time
            client.send(b"x" * 78 + b"\r\n")
            time.sleep(0.1)
        client.send(b".\r\n")
        assert client.getreply()[0] == 552
        time.sleep(0.5)  # past the data deadline, well within an idle time
        assert client.docmd("RSET")[0] == 250
    assert upstream.messages == []


def test_a_session_lasts_at_most_session_seconds_however_busy(
    users: Store, upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    """One command well within every idle time, for ever, would otherwise hold the connection for
    max_commands idle times."""
    proxy = start_proxy(users, upstream.port, limits=Limits(idle_timeout=5.0, session_seconds=1.0))
    with proxy.connect() as client:
        client.sendmail("alice@example.ac.uk", ["bob@other.org"], MESSAGE)  # inside the limit: relayed
        started = time.monotonic()
        reply = (250, b"")
        while reply[0] == 250 and time.monotonic() - started < 5:
            time.sleep(0.1)
            reply = client.noop()
        assert reply == (421, b"4.4.2 smtp.example.ac.uk Session too long; closing connection")
        assert time.monotonic() - started < 3, "the session outlived its limit"
    assert len(upstream.messages) == 1


def test_the_session_limit_waits_for_the_upstreams_answer_to_a_message(
    users: Store, upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    """Closing while the upstream is taking the message could leave it delivered but unanswered,
    and sent again: the 421 comes after the answer is passed on."""
    upstream.data_delay = 1.5
    proxy = start_proxy(users, upstream.port, limits=Limits(idle_timeout=5.0, session_seconds=0.5))
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        client.rcpt("bob@other.org")
        assert client.data(MESSAGE)[0] == 250  # answered at ~1.5 s, after the limit
        assert client.noop() == (421, b"4.4.2 smtp.example.ac.uk Session too long; closing connection")
    assert len(upstream.messages) == 1
