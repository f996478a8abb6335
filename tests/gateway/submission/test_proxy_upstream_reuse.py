"""The proxy keeps upstream connections for the next transaction (issue 7), and that costs no client anything.

Reuse must not weaken design invariant 6: a reused connection the upstream closed while it was idle
is found out at MAIL and the MAIL is sent again on a new connection, so the client still gets its
250 and the message arrives; a connection that was not left at a clean boundary (abandoned in DATA,
broken, answered 421 or a 4xx at the end of data) is never handed to another transaction. The
upstream is `RecordingUpstream`, which keeps each connection's commands apart (`sessions`).
"""

from __future__ import annotations

import logging
import smtplib
import time
from collections.abc import Callable, Iterator

import pytest
from proxy_harness import RunningProxy
from recording_upstream import HangUp, RecordingUpstream

from gateway.store import Store

StartProxy = Callable[..., RunningProxy]
MESSAGE = b"From: alice@example.ac.uk\r\nTo: bob@other.org\r\nSubject: reuse\r\n\r\nHello.\r\n"
KEEP = 30.0  # idle seconds no test step comes near, unless the test is about the idle time
ONE_MESSAGE = ["EHLO", "MAIL", "RCPT", "DATA"]


@pytest.fixture
def start(users: Store, upstream: RecordingUpstream, start_proxy: StartProxy) -> Iterator[StartProxy]:
    """`start(**handler_options)`: a proxy relaying to `upstream`; its idle connections are closed at the end."""
    started: list[RunningProxy] = []

    def start_one(**options: object) -> RunningProxy:
        options.setdefault("upstream_reuse_seconds", KEEP)
        started.append(start_proxy(users, upstream.port, **options))
        return started[-1]

    yield start_one
    for proxy in started:
        proxy.call(proxy.handler.close())


def send(client: smtplib.SMTP, recipient: str = "bob@other.org") -> tuple[int, bytes]:
    """One transaction; the first reply that is not a success, or the final one."""
    code, text = client.mail("alice@example.ac.uk")
    if code != 250:
        return code, text
    code, text = client.rcpt(recipient)
    if code != 250:
        client.rset()
        return code, text
    return client.data(MESSAGE)


# -- reuse ----------------------------------------------------------------------------------------


def test_messages_in_a_row_share_one_upstream_connection_within_and_across_sessions(
    upstream: RecordingUpstream, start: StartProxy
) -> None:
    proxy = start()
    with proxy.connect() as client:
        assert send(client)[0] == 250
        assert send(client)[0] == 250
    with proxy.connect() as client:
        assert send(client)[0] == 250
    assert len(upstream.messages) == 3
    assert upstream.connections == 1 and upstream.verbs(0) == ["EHLO", *(ONE_MESSAGE[1:] * 3)]


def test_a_transaction_the_client_resets_hands_its_connection_on_after_the_upstreams_250_to_rset(
    upstream: RecordingUpstream, start: StartProxy
) -> None:
    proxy = start()
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        assert client.rcpt("bob@other.org")[0] == 250
        assert client.rset()[0] == 250
        pool = proxy.handler.pool
        assert pool is not None
        upstream.until(lambda: len(pool) == 1, "the connection back in the pool")
        assert send(client)[0] == 250
    assert upstream.connections == 1 and upstream.verbs(0) == ["EHLO", "MAIL", "RCPT", "RSET", *ONE_MESSAGE[1:]]
    assert [m.recipients for m in upstream.messages] == [["bob@other.org"]]


def test_the_most_recently_used_connection_is_taken_first(upstream: RecordingUpstream, start: StartProxy) -> None:
    """The one least likely to have been closed by the upstream's idle timeout meanwhile."""
    proxy = start()
    with proxy.connect() as first, proxy.connect() as second:
        for client in (first, second):  # two transactions at once: two connections
            client.mail("alice@example.ac.uk")
            assert client.rcpt("bob@other.org")[0] == 250
        assert first.data(MESSAGE)[0] == 250 and second.data(MESSAGE)[0] == 250
        assert send(first)[0] == 250
    assert upstream.verbs(0) == ONE_MESSAGE and upstream.verbs(1) == [*ONE_MESSAGE, *ONE_MESSAGE[1:]]


def test_the_failure_report_of_a_split_delivery_goes_over_a_connection_already_open(
    upstream: RecordingUpstream, start: StartProxy
) -> None:
    upstream.data_replies = {"alice=f": b"554 5.7.1 List closed\r\n"}
    proxy = start()
    with proxy.connect() as client:
        assert client.sendmail("alice@example.ac.uk", ["bob@other.org", "list@lists.example.org"], MESSAGE) == {}
    copy, report = upstream.messages
    assert copy.recipients == ["bob@other.org"] and report.sender == ""
    assert report.recipients[0].startswith("alice=f") and b"List closed" in report.data
    assert upstream.connections == 2  # one per envelope sender, none more for the report


def test_an_idle_connection_is_closed_with_quit_once_its_idle_time_is_over(
    upstream: RecordingUpstream, start: StartProxy
) -> None:
    proxy = start(upstream_reuse_seconds=0.5)
    with proxy.connect() as client:
        started = time.monotonic()
        assert send(client)[0] == 250
        upstream.until(lambda: upstream.closed == 1, "the idle connection closed while the client stays")
        assert time.monotonic() - started >= 0.5
        assert upstream.verbs(0) == [*ONE_MESSAGE, "QUIT"]
        assert send(client)[0] == 250  # the same session: the next message opens a new connection
    assert upstream.connections == 2 and len(upstream.messages) == 2


def test_with_reuse_off_every_transaction_has_its_own_connection(
    upstream: RecordingUpstream, start: StartProxy
) -> None:
    proxy = start(upstream_reuse_seconds=0)
    assert proxy.handler.pool is None
    with proxy.connect() as client:
        for _ in range(3):
            assert send(client)[0] == 250
    upstream.until(lambda: upstream.closed == 3, "every connection closed")
    assert [upstream.verbs(i) for i in range(upstream.connections)] == [[*ONE_MESSAGE, "QUIT"]] * 3


# -- a connection that died while idle --------------------------------------------------------------


@pytest.mark.parametrize("how", ["421", "close", "reset"])
def test_a_connection_the_upstream_ended_while_idle_costs_the_client_nothing(
    how: HangUp, upstream: RecordingUpstream, start: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """The upstream's idle timeout (421, then close: the MAIL reads that 421), a plain close, a killed
    process (reset): the proxy either notices before it takes the connection or at its MAIL."""
    caplog.set_level(logging.INFO, logger="antiforgery.submission")
    proxy = start()
    with proxy.connect() as client:
        assert send(client)[0] == 250
        upstream.hang_up(how)
        upstream.until(lambda: upstream.closed == 1, "the upstream's end closed")
        assert send(client)[0] == 250
    assert len(upstream.messages) == 2 and upstream.connections == 2
    assert upstream.verbs(1) == ONE_MESSAGE
    retried = [r.getMessage() for r in caplog.records if "MAIL again on a new one" in r.getMessage()]
    if how == "421":  # the MAIL read the 421 waiting in the connection
        assert retried == [
            "idle upstream connection lost (421 4.4.2 upstream.test Error: timeout exceeded); MAIL again on a new one"
        ]


@pytest.mark.parametrize("answer", ["421", "none"])
def test_an_upstream_answering_421_or_nothing_to_mail_on_a_reused_connection_costs_the_client_nothing(
    answer: str, upstream: RecordingUpstream, start: StartProxy, caplog: pytest.LogCaptureFixture
) -> None:
    """A server shutting down (421 to the next command), or one hung (no answer within upstream_timeout)."""
    caplog.set_level(logging.INFO, logger="antiforgery.submission")
    proxy = start(upstream_timeout=0.5)
    with proxy.connect() as client:
        assert send(client)[0] == 250
        if answer == "421":
            upstream.retire()
        else:
            upstream.retire(None)
        assert send(client)[0] == 250
    assert len(upstream.messages) == 2 and upstream.connections == 2
    # MAIL went with the first RCPT (PIPELINING); a server shutting down reads no further than MAIL.
    tried = ["MAIL"] if answer == "421" else ["MAIL", "RCPT"]
    assert upstream.verbs(0) == [*ONE_MESSAGE, *tried] and upstream.verbs(1) == ONE_MESSAGE
    expected = "421 4.3.2 upstream.test Service shutting down" if answer == "421" else "did not answer within 0.5s"
    [retried] = [r.getMessage() for r in caplog.records if "MAIL again on a new one" in r.getMessage()]
    assert expected in retried


@pytest.mark.parametrize("reply", [b"451 4.3.0 Sender check unavailable", b"550 5.7.1 Sender refused"])
def test_a_reply_to_mail_on_a_live_reused_connection_is_passed_on_not_retried(
    reply: bytes, upstream: RecordingUpstream, start: StartProxy
) -> None:
    proxy = start()
    with proxy.connect() as client:
        assert send(client)[0] == 250
        upstream.mail_reply = reply + b"\r\n"
        assert send(client) == (int(reply[:3]), reply[4:])
    assert upstream.connections == 1 and upstream.verbs().count("MAIL") == 2


# -- connections that are never reused ------------------------------------------------------------------


def test_a_connection_whose_copy_was_abandoned_in_data_is_closed_not_reused(
    upstream: RecordingUpstream, start: StartProxy
) -> None:
    """Two envelope senders: the fixed-tag copy is finished first and refused, so bob's copy is
    abandoned by closing its connection before the final dot. The refused one is reset (Postfix
    keeps a transaction open after refusing it there) and carries the next message; the abandoned
    one sees nothing more."""
    upstream.data_replies = {"alice=f": b"554 5.7.1 List closed\r\n"}
    proxy = start()
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        assert client.rcpt("list@lists.example.org")[0] == 250  # connection 0
        assert client.rcpt("bob@other.org")[0] == 250  # connection 1
        assert client.data(MESSAGE) == (554, b"5.7.1 List closed")
        upstream.until(lambda: upstream.closed == 1, "the abandoned connection closed")
        assert send(client)[0] == 250
    assert upstream.verbs(1) == ONE_MESSAGE  # DATA, the message, no final dot, closed
    [abandoned] = upstream.abandoned
    assert abandoned.recipients == ["bob@other.org"] and abandoned.data.endswith(b"\r\nHello.\r\n")
    assert upstream.verbs(0) == [*ONE_MESSAGE, "RSET", *ONE_MESSAGE[1:]] and upstream.connections == 2
    assert [m.recipients for m in upstream.messages] == [["bob@other.org"]]


@pytest.mark.parametrize("fault", ["421 at the end of data", "452 at the end of data", "no reply to the data"])
def test_a_connection_left_broken_or_after_a_temporary_failure_is_closed_not_reused(
    fault: str, upstream: RecordingUpstream, start: StartProxy
) -> None:
    if fault.startswith("no reply"):
        upstream.data_delay = 1.0
    else:
        upstream.data_replies = {"alice": fault[:3].encode() + b" 4.3.0 upstream.test trouble\r\n"}
    proxy = start(upstream_data_timeout=0.3)
    with proxy.connect() as client:
        code, _ = send(client)
        assert 400 <= code < 500
    upstream.data_replies, upstream.data_delay = {}, 0.0
    upstream.until(lambda: upstream.closed == 1, "the connection closed")
    with proxy.connect() as client:
        assert send(client)[0] == 250
    assert upstream.connections == 2 and upstream.verbs(1) == ONE_MESSAGE
    assert "MAIL" not in upstream.verbs(0)[2:]


# -- limits and shutdown -------------------------------------------------------------------------------


def test_at_most_max_idle_connections_are_kept_and_the_one_idle_longest_is_closed(
    upstream: RecordingUpstream, start: StartProxy
) -> None:
    proxy = start(upstream_reuse_max_idle=1)
    with proxy.connect() as first, proxy.connect() as second:
        for client in (first, second):  # two transactions at once: two connections
            client.mail("alice@example.ac.uk")
            assert client.rcpt("bob@other.org")[0] == 250
        assert first.data(MESSAGE)[0] == 250 and second.data(MESSAGE)[0] == 250
        upstream.until(lambda: upstream.closed == 1, "one of the two idle connections closed")
        assert upstream.verbs(0) == [*ONE_MESSAGE, "QUIT"]
        assert send(first)[0] == 250
    assert upstream.connections == 2 and upstream.verbs(1) == [*ONE_MESSAGE, *ONE_MESSAGE[1:]]


def test_a_busy_connection_is_not_reused_past_its_maximum_age(upstream: RecordingUpstream, start: StartProxy) -> None:
    proxy = start(upstream_reuse_max_seconds=1.0)
    with proxy.connect() as client:
        started = time.monotonic()
        while upstream.connections < 2:
            assert send(client)[0] == 250
            assert time.monotonic() - started < 10, "the first connection was reused past its maximum age"
            time.sleep(0.05)  # a steady stream, well within the session's command limit
        assert time.monotonic() - started >= 1.0
    upstream.until(lambda: upstream.closed >= 1, "the old connection closed")
    assert upstream.verbs(0)[-1] == "QUIT" and upstream.verbs(0).count("MAIL") >= 2


def test_closing_the_handler_quits_idle_connections_and_drops_any_handed_back_later(
    upstream: RecordingUpstream, start: StartProxy
) -> None:
    """One handed back after the close is closed at once, without QUIT: `serve` stops its event loop
    right after, so a task to QUIT it would never run (it was left as a coroutine never awaited)."""
    proxy = start()
    with proxy.connect() as busy, proxy.connect() as idle:
        busy.mail("alice@example.ac.uk")
        assert busy.rcpt("bob@other.org")[0] == 250  # connection 0, in a transaction
        assert send(idle)[0] == 250  # connection 1, idle after its message
        proxy.call(proxy.handler.close())
        assert upstream.verbs(1) == [*ONE_MESSAGE, "QUIT"]
        assert busy.rset()[0] == 250  # its transaction ends: RSET upstream, and no pool to go back to
        upstream.until(lambda: upstream.closed == 2, "both connections closed")
    assert upstream.verbs(0) == ["EHLO", "MAIL", "RCPT", "RSET"]


# -- an upstream closing its connection ------------------------------------------------------------


@pytest.mark.parametrize("when", ["MAIL", "end of data"])
def test_an_upstream_421_reaches_the_client_as_451_and_its_session_goes_on(
    when: str, upstream: RecordingUpstream, start: StartProxy
) -> None:
    """421 says its sender is closing (RFC 5321 section 3.8): true of the upstream's connection, not of
    the client's session, which the proxy keeps. The client gets 451 with the upstream's own text."""
    shutting = b"421 4.3.2 upstream.test Service shutting down\r\n"
    if when == "MAIL":
        upstream.mail_reply = shutting
    else:
        upstream.data_replies = {"alice": shutting}
    proxy = start()
    with proxy.connect() as client:
        assert send(client) == (451, b"4.3.2 upstream.test Service shutting down")
        upstream.mail_reply, upstream.data_replies = None, {}
        assert send(client)[0] == 250  # the same session, on a new upstream connection
    assert upstream.connections == 2 and len(upstream.messages) == 1


# -- pipelining ------------------------------------------------------------------------------------


@pytest.mark.parametrize("offered", [True, False])
def test_mail_and_the_first_rcpt_go_in_one_write_where_the_upstream_offers_pipelining(
    offered: bool, upstream: RecordingUpstream, start: StartProxy
) -> None:
    """RFC 2920: a round trip less per message; later recipients and DATA wait for their replies."""
    upstream.pipelining = offered
    proxy = start()
    with proxy.connect() as client:
        assert client.mail("alice@example.ac.uk")[0] == 250
        assert client.rcpt("bob@other.org")[0] == 250
        assert client.rcpt("carol@other.org")[0] == 250
        assert client.data(MESSAGE)[0] == 250
    assert [m.recipients for m in upstream.messages] == [["bob@other.org", "carol@other.org"]]
    assert [c.split(":")[0] for c in upstream.pipelined] == (["MAIL FROM"] if offered else [])


def test_a_refused_mail_is_the_first_recipients_reply_and_the_connection_stays_in_step(
    upstream: RecordingUpstream, start: StartProxy
) -> None:
    """The RCPT sent with a refused MAIL gets 503 upstream; it is read, not taken for the next reply."""
    upstream.mail_reply = b"550 5.7.1 Sender refused\r\n"
    proxy = start()
    with proxy.connect() as client:
        assert send(client) == (550, b"5.7.1 Sender refused")
        upstream.mail_reply = None
        assert send(client)[0] == 250
    assert len(upstream.messages) == 1
