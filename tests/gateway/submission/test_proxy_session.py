"""The proxy's SMTP dialogue: TLS before AUTH, throttled guessing, no open relay, failing upstreams, limits.

Real sockets and a real store throughout; the upstream is smtp-sink where a real server has to take
the mail, nothing at all where it must be unreachable, and a silent socket where it must hang.
"""

from __future__ import annotations

import base64
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from components import free_port
from proxy_harness import PASSWORD, RunningProxy

from gateway.store import Store
from gateway.submission.auth import StoreAuthenticator
from gateway.submission.limits import Limits

StartProxy = Callable[..., RunningProxy]
MESSAGE = b"From: alice@example.ac.uk\r\nTo: bob@other.org\r\nSubject: hi\r\n\r\nHello.\r\n"


def plain(login: str, password: str) -> str:
    return base64.b64encode(f"\0{login}\0{password}".encode()).decode()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A socket that accepts connections (the kernel completes them) and never says a word."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


def try_plain(client: smtplib.SMTP, login: str, password: str) -> tuple[int, bytes]:
    return client.docmd("AUTH", f"PLAIN {plain(login, password)}")


# -- TLS and AUTH ------------------------------------------------------------------------------


def test_auth_is_offered_and_accepted_only_after_starttls(users: Store, start_proxy: StartProxy) -> None:
    proxy = start_proxy(users, free_port())
    with proxy.connect(tls=False, login=None) as client:
        assert client.has_extn("starttls") and not client.has_extn("auth")
        assert try_plain(client, "alice", PASSWORD) == (530, b"5.7.0 Must issue a STARTTLS command first")
    with proxy.connect(login=None) as client:
        assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
        assert try_plain(client, "alice", PASSWORD)[0] == 235


def test_loopback_may_skip_tls_only_when_configured(users: Store, start_proxy: StartProxy) -> None:
    proxy = start_proxy(users, free_port(), allow_auth_without_tls_on_loopback=True)
    with proxy.connect(tls=False) as client:  # logs in, no STARTTLS
        assert client.noop()[0] == 250


def test_login_mechanism_with_challenges(users: Store, start_proxy: StartProxy) -> None:
    proxy = start_proxy(users, free_port())
    with proxy.connect(login=None) as client:
        client.user, client.password = "bob", PASSWORD
        assert client.auth("LOGIN", client.auth_login, initial_response_ok=False)[0] == 235


def test_wrong_password_is_535_with_a_growing_delay_then_a_lockout(users: Store, start_proxy: StartProxy) -> None:
    limits = Limits(auth_max_failures=3, auth_failure_delay=0.3, auth_lockout_seconds=60)
    proxy = start_proxy(users, free_port(), limits=limits)
    with proxy.connect(login=None) as client:
        delays = []
        for _ in range(3):
            started = time.monotonic()
            assert try_plain(client, "alice", "guess") == (535, b"5.7.8 Authentication credentials invalid")
            delays.append(time.monotonic() - started)
        assert 0.3 <= delays[0] < delays[1] < delays[2] and delays[2] >= 1.2
        code, text = try_plain(client, "alice", PASSWORD)  # even the right password: locked out
        assert code == 454 and text.startswith(b"4.7.0 Too many failed logins from 127.0.0.1")
    with proxy.connect(login=None, source="127.0.0.2") as other:  # another client is not affected
        assert try_plain(other, "alice", PASSWORD)[0] == 235


def test_password_backend_down_is_454_not_535(users: Store, start_proxy: StartProxy) -> None:
    dead = Store.open("postgresql+psycopg://nobody@127.0.0.1:1/none", check_schema=False)
    try:
        proxy = start_proxy(users, free_port(), authenticator=StoreAuthenticator(dead))
        with proxy.connect(login=None) as client:
            reply = try_plain(client, "alice", PASSWORD)
            assert reply == (454, b"4.7.0 Temporary authentication failure; try again later")
    finally:
        dead.close()


# -- no open relay, only one's own senders -------------------------------------------------------


def test_nothing_is_relayed_without_auth(users: Store, smtp_sink: object, start_proxy: StartProxy) -> None:
    proxy = start_proxy(users, free_port())
    with proxy.connect(login=None) as client:
        assert client.mail("alice@example.ac.uk") == (530, b"5.7.0 Authentication required")
        assert client.rcpt("bob@other.org") == (530, b"5.7.0 Authentication required")
        assert client.docmd("DATA") == (530, b"5.7.0 Authentication required")


def test_sender_the_user_does_not_own_is_553_with_the_reason(users: Store, start_proxy: StartProxy) -> None:
    proxy = start_proxy(users, free_port())
    with proxy.connect() as client:
        code, text = client.mail("bob@example.ac.uk")
        assert code == 553
        assert text == b"5.7.1 alice may not send as bob@example.ac.uk; use your own address alice@example.ac.uk"
        assert client.docmd("AUTH", "PLAIN x")[0] == 503  # already authenticated


def test_auth_is_refused_inside_a_transaction(users: Store, start_proxy: StartProxy) -> None:
    proxy = start_proxy(users, free_port(), allow_auth_without_tls_on_loopback=True)
    with proxy.connect(tls=False, login=None) as client:
        client.docmd("AUTH", f"PLAIN {plain('alice', PASSWORD)}")
        client.mail("alice@example.ac.uk")
        assert client.docmd("AUTH", f"PLAIN {plain('alice', PASSWORD)}")[0] == 503


# -- the upstream fails ---------------------------------------------------------------------------


def test_upstream_down_defers_each_recipient_and_nothing_is_accepted(users: Store, start_proxy: StartProxy) -> None:
    proxy = start_proxy(users, free_port())
    with proxy.connect() as client:
        assert client.mail("alice@example.ac.uk")[0] == 250
        code, text = client.rcpt("bob@other.org")
        assert code == 451 and text.startswith(b"4.4.1 Upstream mail server unreachable")
        assert client.docmd("DATA") == (554, b"5.5.1 No valid recipients")


def test_upstream_that_never_answers_defers_after_the_timeout(
    users: Store, silent_port: int, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(users, silent_port, upstream_timeout=1.0)
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        started = time.monotonic()
        code, text = client.rcpt("bob@other.org")
        assert (code, text) == (451, b"4.4.2 Upstream mail server did not answer within 1s; try again later")
        assert 1.0 <= time.monotonic() - started < 4.0


class SilentAfterData:
    """An SMTP server that takes a whole message and then never answers its final dot."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.received = b""
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection, connection.makefile("rb") as reader:
            connection.sendall(b"220 silent ESMTP\r\n")
            for reply in (b"250-silent\r\n250 8BITMIME\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
                reader.readline()  # EHLO, MAIL, RCPT, DATA
                connection.sendall(reply)
            while not self.received.endswith(b"\r\n.\r\n") and (line := reader.readline()):
                self.received += line
            connection.recv(1)  # no reply; wait for the proxy to give up and close


def test_upstream_silent_after_the_message_defers_the_client(users: Store, start_proxy: StartProxy) -> None:
    upstream = SilentAfterData()
    proxy = start_proxy(users, upstream.port, upstream_data_timeout=1.0)
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        assert client.rcpt("bob@other.org")[0] == 250
        code, text = client.data(MESSAGE)
    assert (code, text) == (451, b"4.4.2 Upstream mail server did not answer within 1s; try again later")
    assert upstream.received.endswith(b"Hello.\r\n.\r\n")


# -- limits ---------------------------------------------------------------------------------------


def test_size_is_advertised_and_enforced(users: Store, smtp_sink: object, start_proxy: StartProxy) -> None:
    proxy = start_proxy(users, smtp_sink.port, limits=Limits(max_message_size=2000))  # type: ignore[attr-defined]
    with proxy.connect() as client:
        assert client.esmtp_features["size"] == "2000"
        assert client.mail("alice@example.ac.uk", ["SIZE=3000"])[0] == 552
        client.mail("alice@example.ac.uk")
        client.rcpt("bob@other.org")
        code, text = client.data(MESSAGE + (b"x" * 70 + b"\r\n") * 30)
        assert code == 552 and text.startswith(b"5.3.4 Message exceeds the limit of 2000 octets")


def test_too_many_recipients_is_452(users: Store, smtp_sink: object, start_proxy: StartProxy) -> None:
    proxy = start_proxy(users, smtp_sink.port, limits=Limits(max_recipients=2))  # type: ignore[attr-defined]
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        assert [client.rcpt(f"r{i}@other.org")[0] for i in range(3)] == [250, 250, 452]
        assert client.rcpt("r9@other.org")[1].startswith(b"4.5.3 Too many recipients")


def test_overlong_line_is_refused_after_the_data(users: Store, smtp_sink: object, start_proxy: StartProxy) -> None:
    proxy = start_proxy(users, smtp_sink.port)  # type: ignore[attr-defined]
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        client.rcpt("bob@other.org")
        code, text = client.data(MESSAGE + b"y" * 999 + b"\r\n")
        assert code == 500 and text.startswith(b"5.5.2 Line too long")
        assert client.noop()[0] == 250  # the session goes on


def test_too_many_commands_closes_the_session(users: Store, start_proxy: StartProxy) -> None:
    proxy = start_proxy(users, free_port(), limits=Limits(max_commands=5))
    with proxy.connect(tls=False, login=None) as client:  # EHLO is the first
        assert [client.noop()[0] for _ in range(4)] == [250] * 4
        assert client.noop() == (421, b"4.7.0 Too many commands in one session; closing connection")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_idle_client_is_told_before_the_connection_closes(users: Store, start_proxy: StartProxy) -> None:
    proxy = start_proxy(users, free_port(), limits=Limits(idle_timeout=0.5))
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received.startswith(b"220 ")
    assert received.endswith(b"421 4.4.2 smtp.example.ac.uk Idle timeout; closing connection\r\n")
