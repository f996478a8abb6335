"""The proxy end to end: real sockets, a real store, real Postfix as the upstream, smtp-sink as the next hop.

smtp-sink records each transaction it receives as a file that starts with the envelope it was given
(X-Mail-Args, X-Rcpt-Args): what Postfix relayed, so what the proxy handed Postfix.
"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from proxy_harness import RunningProxy, add_users
from service_harness import KEYRING

from gateway.store import Store
from signed_sender import TagKind, verify

MESSAGE = "From: Alice <alice@example.ac.uk>\r\nTo: bob@other.org\r\nSubject: hello\r\n\r\nHi Bob.\r\n"
StartProxy = Callable[..., RunningProxy]


def envelope(captured: str) -> tuple[str, list[str]]:
    """(MAIL FROM argument line, RCPT TO argument lines) as smtp-sink recorded them."""
    mail = re.search(r"^X-Mail-Args: (.*)$", captured, re.MULTILINE)
    assert mail, captured
    return mail[1], re.findall(r"^X-Rcpt-Args: (.*)$", captured, re.MULTILINE)


def sender_of(captured: str) -> str:
    match = re.match(r"<([^>]*)>", envelope(captured)[0])
    assert match
    return match[1]


def settle(upstream: Any, sessions: int, timeout: float = 10.0) -> str:
    """Postfix's log once `sessions` client sessions ended, and a moment for any delivery to reach the sink."""
    deadline = time.time() + timeout
    while time.time() < deadline and upstream.log().count("disconnect from") < sessions:
        time.sleep(0.1)
    time.sleep(1.0)
    return str(upstream.log())


def reject_map(directory: Path, name: str, rules: str) -> str:
    """A Postfix regexp table in a directory the postfix user can read."""
    path = directory / name
    path.write_text(rules)
    path.chmod(0o644)
    return f"regexp:{path}"


def test_opted_in_users_sender_is_signed_once_and_the_message_arrives(
    store: Store, postfix: Any, smtp_sink: Any, start_proxy: StartProxy
) -> None:
    add_users(store)
    proxy = start_proxy(store, postfix().port)
    with proxy.connect() as client:
        refused = client.sendmail("alice@example.ac.uk", ["bob@other.org", "carol@other.org"], MESSAGE)
    assert refused == {}
    [captured] = smtp_sink.messages(1)
    verdict = verify(sender_of(captured), KEYRING, time.time())
    assert verdict.ok and verdict.kind is TagKind.ENVELOPE and verdict.address == "alice@example.ac.uk"
    assert [r.split()[0] for r in envelope(captured)[1]] == ["<bob@other.org>", "<carol@other.org>"]
    assert "by smtp.example.ac.uk (antiforgery) with ESMTPSA id" in captured
    assert "(using TLSv1.3 with cipher" in captured and "\nHi Bob.\n" in captured


def test_user_not_opted_in_is_relayed_unchanged(
    store: Store, postfix: Any, smtp_sink: Any, start_proxy: StartProxy
) -> None:
    add_users(store)
    proxy = start_proxy(store, postfix().port)
    with proxy.connect(login="bob") as client:
        client.sendmail("bob@example.ac.uk", ["someone@other.org"], MESSAGE.replace("Alice <alice", "Bob <bob"))
    [captured] = smtp_sink.messages(1)
    assert sender_of(captured) == "bob@example.ac.uk"


def test_fixed_tag_recipient_gets_its_own_upstream_transaction(
    store: Store, postfix: Any, smtp_sink: Any, start_proxy: StartProxy
) -> None:
    add_users(store)
    proxy = start_proxy(store, postfix().port)
    with proxy.connect() as client:
        client.sendmail("alice@example.ac.uk", ["bob@other.org", "List@lists.example.org"], MESSAGE)
    captured = smtp_sink.messages(2)
    assert len(captured) == 2
    by_recipient = {envelope(c)[1][0].split()[0]: c for c in captured}
    fixed = verify(sender_of(by_recipient["<List@lists.example.org>"]), KEYRING, time.time())
    normal = verify(sender_of(by_recipient["<bob@other.org>"]), KEYRING, time.time())
    assert fixed.ok and fixed.kind is TagKind.FIXED and fixed.fixed_id == store.list_fixed_tags("alice")[0].id
    assert normal.ok and normal.kind is TagKind.ENVELOPE
    ids = {re.search(r"\(antiforgery\) with ESMTPSA id (\w+)", c)[1] for c in captured}  # type: ignore[index]
    assert len(ids) == 1  # one message, one Received, signed once: two envelopes


def test_esmtp_parameters_pass_through_postfix(
    sqlite_store: Store, postfix: Any, smtp_sink: Any, start_proxy: StartProxy
) -> None:
    """SIZE, BODY, SMTPUTF8 and DSN reach Postfix: it relays them on, and names SMTPUTF8 in its Received."""
    add_users(sqlite_store)
    proxy = start_proxy(sqlite_store, postfix().port)
    body = MESSAGE.replace("Hi Bob.", "Grüße, Bjørn.").encode("utf-8")
    with proxy.connect() as client:
        assert client.has_extn("dsn") and client.has_extn("smtputf8") and client.has_extn("8bitmime")
        params = [f"SIZE={len(body)}", "BODY=8BITMIME", "SMTPUTF8", "RET=HDRS", "ENVID=Q+2Bid1"]
        client.mail("alice@example.ac.uk", params)
        code, _ = client.rcpt("bjorn@other.org", ["NOTIFY=FAILURE,DELAY", "ORCPT=rfc822;Bjorn+40x@other.org"])
        assert code == 250
        code, _ = client.data(body)
        assert code == 250
    [captured] = smtp_sink.messages(1)
    mail, [rcpt] = envelope(captured)
    assert mail.split()[1:] == ["BODY=8BITMIME", "ENVID=Q+2Bid1", "RET=HDRS"]  # as Postfix relays them
    assert rcpt == "<bjorn@other.org> ORCPT=rfc822;Bjorn@x@other.org NOTIFY=FAILURE,DELAY"  # Postfix decoded xtext
    # smtp-sink offers no SMTPUTF8, so Postfix downgrades this all-ASCII envelope; its trace shows it got it.
    assert re.search(r"by mx\.example\.ac\.uk \(Postfix\) with UTF8SMTP id", captured)
    assert "Grüße, Bjørn." in captured


def test_what_the_proxy_sends_is_exactly_the_clients_parameters(
    sqlite_store: Store, smtp_sink: Any, start_proxy: StartProxy
) -> None:
    """Straight to smtp-sink, no hop in between: exactly what the client said, less what the sink does not offer.

    smtp-sink offers 8BITMIME and DSN but neither SIZE nor SMTPUTF8: SIZE is left out, and an
    SMTPUTF8 message, which cannot be delivered intact without it, is refused.
    """
    add_users(sqlite_store)
    proxy = start_proxy(sqlite_store, smtp_sink.port)
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk", ["SIZE=1000", "BODY=8BITMIME", "RET=FULL", "ENVID=x+3Dy"])
        client.rcpt("bob@other.org", ["NOTIFY=NEVER", "ORCPT=rfc822;bob@other.org"])
        client.data(MESSAGE.encode())
        client.mail("alice@example.ac.uk", ["SMTPUTF8"])
        code, text = client.rcpt("bob@other.org")
        assert (code, text) == (553, b"5.6.7 The next hop cannot take internationalised mail (no SMTPUTF8)")
    [captured] = smtp_sink.messages(1)
    mail, [rcpt] = envelope(captured)
    assert mail.split()[1:] == ["BODY=8BITMIME", "RET=FULL", "ENVID=x+3Dy"]
    assert rcpt.split()[1:] == ["NOTIFY=NEVER", "ORCPT=rfc822;bob@other.org"]


def test_size_parameter_reaches_postfix(sqlite_store: Store, postfix: Any, start_proxy: StartProxy) -> None:
    """Postfix refuses a declared size over its own limit at MAIL: the client gets that refusal at RCPT."""
    add_users(sqlite_store)
    proxy = start_proxy(sqlite_store, postfix(main_cf="message_size_limit = 2000\n").port)
    with proxy.connect() as client:
        assert client.mail("alice@example.ac.uk", ["SIZE=5000"])[0] == 250
        assert client.rcpt("bob@other.org") == (552, b"5.3.4 Message size exceeds fixed limit")


def test_recipient_refused_upstream_gets_the_upstreams_own_reply(
    sqlite_store: Store, postfix: Any, mail_dir: Path, start_proxy: StartProxy
) -> None:
    add_users(sqlite_store)
    table = reject_map(mail_dir, "recipients", "/^nobody@other\\.org$/ 550 5.1.1 No such user here\n")
    restrictions = f"check_recipient_access {table}, permit_mynetworks, reject"
    upstream = postfix(main_cf=f"smtpd_recipient_restrictions = {restrictions}\n")
    proxy = start_proxy(sqlite_store, upstream.port)
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        code, text = client.rcpt("nobody@other.org")
        assert (code, text) == (550, b"5.1.1 <nobody@other.org>: Recipient address rejected: No such user here")
        assert client.rcpt("bob@other.org")[0] == 250


def test_upstream_refusing_the_message_at_end_of_data_gives_the_client_its_reply(
    sqlite_store: Store, postfix: Any, smtp_sink: Any, mail_dir: Path, start_proxy: StartProxy
) -> None:
    add_users(sqlite_store)
    table = reject_map(mail_dir, "senders", "/^alice=/ 554 5.7.1 Content refused by policy\n")
    upstream = postfix(main_cf=f"smtpd_end_of_data_restrictions = check_sender_access {table}\n")
    proxy = start_proxy(sqlite_store, upstream.port)
    with proxy.connect() as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("alice@example.ac.uk", ["bob@other.org"], MESSAGE)
    assert refused.value.smtp_code == 554
    assert refused.value.smtp_error.decode().endswith("Sender address rejected: Content refused by policy")
    settle(upstream, 1)
    assert smtp_sink.messages(0) == []


def test_split_delivery_refused_after_an_accepted_copy_is_reported_by_dsn(
    sqlite_store: Store, postfix: Any, smtp_sink: Any, mail_dir: Path, start_proxy: StartProxy
) -> None:
    """The normal copy is accepted first; the fixed-tag copy is then refused: 250 to the client, a DSN to the user."""
    add_users(sqlite_store)
    table = reject_map(mail_dir, "senders", "/^alice=f/ 554 5.7.1 List closed\n")
    upstream = postfix(main_cf=f"smtpd_end_of_data_restrictions = check_sender_access {table}\n")
    proxy = start_proxy(sqlite_store, upstream.port)
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk", ["ENVID=env42"])
        client.rcpt("bob@other.org")
        client.rcpt("list@lists.example.org", ["NOTIFY=FAILURE"])
        code, _ = client.data(MESSAGE.encode())
    assert code == 250
    captured = smtp_sink.messages(2)
    assert len(captured) == 2
    report = next(c for c in captured if envelope(c)[0].startswith("<>"))
    delivered = next(c for c in captured if c is not report)
    assert envelope(delivered)[1][0].startswith("<bob@other.org>")
    fixed_sender = envelope(report)[1][0].split()[0].strip("<>")
    assert verify(fixed_sender, KEYRING, time.time()).kind is TagKind.FIXED
    assert "report-type=delivery-status" in report and "Original-Envelope-Id: env42" in report
    assert "Final-Recipient: rfc822; list@lists.example.org" in report and "Status: 5.7.1" in report
    assert "List closed" in report


def test_split_delivery_refused_first_abandons_every_copy(
    sqlite_store: Store, postfix: Any, smtp_sink: Any, mail_dir: Path, start_proxy: StartProxy
) -> None:
    """The fixed-tag copy is finished first and refused: the other copy is abandoned, the client gets the refusal."""
    add_users(sqlite_store)
    table = reject_map(mail_dir, "senders", "/^alice=f/ 554 5.7.1 List closed\n")
    upstream = postfix(main_cf=f"smtpd_end_of_data_restrictions = check_sender_access {table}\n")
    proxy = start_proxy(sqlite_store, upstream.port)
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        client.rcpt("list@lists.example.org")
        client.rcpt("bob@other.org")
        code, text = client.data(MESSAGE.encode())
    assert code == 554 and text.endswith(b"List closed")
    assert "lost connection after DATA" in settle(upstream, 2)  # the other copy, abandoned before its dot
    assert smtp_sink.messages(0) == []


def test_split_delivery_refused_at_the_data_command_sends_no_copy(
    sqlite_store: Store, postfix: Any, smtp_sink: Any, mail_dir: Path, start_proxy: StartProxy
) -> None:
    """The normal copy is ready (354, octets sent), the fixed one refuses DATA: both abandoned, nothing sent."""
    add_users(sqlite_store)
    table = reject_map(mail_dir, "senders", "/^alice=f/ 450 4.7.1 Lists paused\n")
    upstream = postfix(main_cf=f"smtpd_data_restrictions = check_sender_access {table}\n")
    proxy = start_proxy(sqlite_store, upstream.port)
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        client.rcpt("bob@other.org")
        client.rcpt("list@lists.example.org")
        code, text = client.data(MESSAGE.encode())
    assert code == 450 and text.endswith(b"Lists paused")
    settle(upstream, 2)
    assert smtp_sink.messages(0) == []


def test_split_delivery_whose_report_cannot_be_queued_is_a_451_naming_who_got_it(
    sqlite_store: Store, postfix: Any, smtp_sink: Any, mail_dir: Path, start_proxy: StartProxy
) -> None:
    """Accepted for bob, refused for the list, and the upstream refuses our null-sender report: 451, not 250."""
    add_users(sqlite_store)
    senders = reject_map(mail_dir, "senders", "/^alice=f/ 554 5.7.1 List closed\n")
    bounces = reject_map(mail_dir, "bounces", "/^<>$/ 451 4.3.0 No bounces now\n")
    upstream = postfix(
        main_cf=f"smtpd_end_of_data_restrictions = check_sender_access {senders}\n"
        f"smtpd_sender_restrictions = check_sender_access {bounces}\n"
        "smtpd_null_access_lookup_key = <>\n"
    )
    proxy = start_proxy(sqlite_store, upstream.port)
    with proxy.connect() as client:
        client.mail("alice@example.ac.uk")
        client.rcpt("bob@other.org")
        client.rcpt("list@lists.example.org")
        code, text = client.data(MESSAGE.encode())
    assert code == 451
    assert text == b"4.3.0 Delivered to <bob@other.org> but not to the others; the failure report was not queued"
    [delivered] = smtp_sink.messages(1)
    assert envelope(delivered)[1][0].startswith("<bob@other.org>")
