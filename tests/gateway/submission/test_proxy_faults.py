"""Faults behind the proxy (issue 7): each gives the client a 4xx, clears by itself, and loses no message.

A 4xx leaves the message with the client, which retries (RFC 5321 section 4.2.5); so "no message
lost" means: never a 250 for a message the next hop did not take, and the retry after the fault
cleared is delivered, with no restart of the proxy in between. The upstream is a recording fake
where the fault must be exact (stopped, hanging, a full disk answering 452 at the end of data), real
Postfix where Postfix can produce the fault itself (queue file system below `queue_minfree`), and
the store is real PostgreSQL behind a `db_cable.Cable` for a stopped database.
"""

from __future__ import annotations

import base64
import re
import smtplib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from db_cable import Cable
from proxy_harness import PASSWORD, RunningProxy, add_users
from recording_upstream import RecordingUpstream

from gateway.store import Store

StartProxy = Callable[..., RunningProxy]
MESSAGE = b"From: alice@example.ac.uk\r\nTo: bob@other.org\r\nSubject: faults\r\n\r\nHello.\r\n"


def send(client: smtplib.SMTP, recipient: str = "bob@other.org") -> tuple[int, bytes]:
    """One transaction; the first reply that is not a success, or the final one."""
    client.rset()
    code, text = client.mail("alice@example.ac.uk")
    if code != 250:
        return code, text
    code, text = client.rcpt(recipient)
    if code != 250:
        assert client.docmd("DATA")[0] == 554  # no recipient: nothing to send
        return code, text
    return client.data(MESSAGE)


def test_upstream_stopped_defers_and_the_retry_after_its_restart_is_delivered(
    users: Store, upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(users, upstream.port)
    with proxy.connect() as client:
        assert send(client)[0] == 250
        upstream.stop()
        code, text = send(client)
        assert code == 451 and text.startswith(b"4.4.1 Upstream mail server unreachable")
        upstream.start()
        assert send(client)[0] == 250  # the same session: the proxy needed no restart
    assert len(upstream.messages) == 2


def test_upstream_stopped_in_the_middle_of_a_transaction_defers_the_message(
    users: Store, upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(users, upstream.port)
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        assert client.rcpt("bob@other.org")[0] == 250
        upstream.stop()  # drops the connection the proxy opened at RCPT
        code, text = client.data(MESSAGE)
        assert code == 451 and text.startswith(b"4.4.2 Upstream mail server")
        upstream.start()
        assert send(client)[0] == 250
    assert len(upstream.messages) == 1


def test_upstream_hanging_defers_after_the_timeout_and_recovers(
    users: Store, upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(users, upstream.port, upstream_timeout=0.5)
    upstream.mode = "hang"
    with proxy.connect() as client:
        code, text = send(client)
        assert (code, text) == (451, b"4.4.2 Upstream mail server did not answer within 0.5s; try again later")
        upstream.mode = "ok"
        assert send(client)[0] == 250
    assert len(upstream.messages) == 1


def test_upstream_disk_full_at_the_end_of_data_is_relayed_as_452_never_250(
    users: Store, upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(users, upstream.port)
    upstream.mode = "full"
    with proxy.connect() as client:
        assert send(client) == (452, b"4.3.1 Insufficient system storage")
        assert send(client, "list@lists.example.org") == (452, b"4.3.1 Insufficient system storage")
        upstream.mode = "ok"  # space again
        assert send(client)[0] == 250
    assert len(upstream.refused) == 2 and len(upstream.messages) == 1


def test_upstream_disk_full_for_one_copy_of_a_split_delivery_is_not_hidden(
    users: Store, upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    """Two groups (a fixed-tag recipient and a plain one), both refused 452: nothing was accepted, 452."""
    proxy = start_proxy(users, upstream.port)
    upstream.mode = "full"
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        client.rcpt("list@lists.example.org")
        client.rcpt("bob@other.org")
        assert client.data(MESSAGE) == (452, b"4.3.1 Insufficient system storage")
    assert upstream.messages == []


def test_postfix_short_of_queue_space_gives_452_and_takes_the_retry_once_space_is_back(
    users: Store, postfix: Any, smtp_sink: Any, start_proxy: StartProxy
) -> None:
    """Real Postfix refusing mail because its queue file system is below `queue_minfree` (a full disk,
    as far as Postfix can tell: a petabyte is more than this machine has free)."""
    upstream = postfix(main_cf="queue_minfree = 1000000000000000\n")
    proxy = start_proxy(users, upstream.port)
    with proxy.connect() as client:
        code, text = send(client)
        assert (code, text) == (452, b"4.3.1 Insufficient system storage")
        main_cf = upstream.config_dir / "main.cf"
        main_cf.write_text(re.sub(r"(?m)^queue_minfree = .*$", "queue_minfree = 0", main_cf.read_text()))
        upstream.postfix("reload")
        deadline = time.monotonic() + 15
        while (reply := send(client))[0] != 250:  # as a mail client retries a 4xx
            assert reply[0] == 452 and time.monotonic() < deadline, reply
            time.sleep(0.2)
    # Postfix also tells its postmaster about the resource problem (notify_classes): not ours.
    [message] = [m for m in smtp_sink.messages(1) if "X-Mail-Args: <alice=" in m]
    assert "Subject: faults" in message


# -- the store stopped ------------------------------------------------------------------------------


@pytest.fixture
def cabled(postgresql_server: Any, tmp_path: Any) -> Iterator[tuple[Cable, Store]]:
    """A real PostgreSQL store with the users, and a store object that reaches it through a cable."""
    url = postgresql_server.create_database()
    Store.upgrade(url)
    direct = Store.open(url)
    add_users(direct)
    cable, through = Cable.to_postgresql(url)
    store = Store.open(through, check_schema=False)
    yield cable, store
    store.close()
    cable.close()
    direct.close()
    postgresql_server.drop_database(url)


def plain(login: str) -> str:
    return base64.b64encode(f"\0{login}\0{PASSWORD}".encode()).decode()


def login(proxy: RunningProxy) -> tuple[int, bytes]:
    with proxy.connect(login=None) as client:
        code, text = client.docmd("AUTH", "PLAIN " + plain("alice"))
    return code, text


def test_store_stopped_defers_logins_keeps_open_sessions_working_and_recovers(
    cabled: tuple[Cable, Store], upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    cable, store = cabled
    proxy = start_proxy(store, upstream.port)
    with proxy.connect() as client:
        cable.cut()
        assert send(client)[0] == 250  # the directory is in memory: mail goes on
        assert login(proxy) == (454, b"4.7.0 Temporary authentication failure; try again later")
        cable.mend()
        assert login(proxy)[0] == 235
        assert send(client)[0] == 250
    assert len(upstream.messages) == 2


def test_store_stopped_at_start_defers_until_it_is_back(
    cabled: tuple[Cable, Store], upstream: RecordingUpstream, start_proxy: StartProxy
) -> None:
    cable, store = cabled
    cable.cut()
    proxy = start_proxy(store, upstream.port)
    assert login(proxy)[0] == 454
    cable.mend()
    deadline = time.monotonic() + 15
    while True:  # as a mail client retries: log in, send
        with proxy.connect(login=None) as client:
            if client.docmd("AUTH", "PLAIN " + plain("alice"))[0] == 235 and send(client)[0] == 250:
                break
        assert time.monotonic() < deadline, "the proxy did not recover"
        time.sleep(0.2)
    assert len(upstream.messages) == 1
