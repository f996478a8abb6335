"""Odd address forms through the proxy itself: refused with a reason, or relayed exactly as checked.

An authenticated user may send to anyone, so for recipients the open-relay question is not who but
how: the upstream trusts the proxy as a local client and applies its old routing rules (percent
hack, bang paths, dequoted local parts, address literals) to whatever it is handed, so an address
in such a form could be delivered somewhere other than the address the proxy read. For senders
the question is whether a form lets a user past the own-address check, or get a signed tag for an
address that routes to someone else. The answer for both: plain addresses only (`plan.address_syntax`),
`501 5.1.7` (sender) or `501 5.1.3` (recipient) with the reason, as Postfix words them; a source
route is dropped (RFC 5321 section 4.1.1.3) and the address relayed without it. The upstream here
records every command: a refused address never reaches it, not even as a connection.

`tests/callout/test_bad_input.py` has the same forms through `decide()` and the policy adapter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from proxy_harness import RawClient, RunningProxy, add_users
from recording_upstream import RecordingUpstream

from gateway.store import Store
from gateway.submission.plan import address_syntax

LONG_DOMAIN = ".".join(["d" * 60] * 3) + ".example"  # 190 octets: a valid domain name
SENDER_SYNTAX = "501 5.1.7 Bad sender address syntax: "
RECIPIENT_SYNTAX = "501 5.1.3 Bad recipient address syntax: "

#: MAIL FROM arguments refused, and how each reply begins.
REFUSED_SENDERS = {
    "percent hack": (
        b"<user%other.org@example.ac.uk>",
        SENDER_SYNTAX + "user%other.org@example.ac.uk uses old routing",
    ),
    "percent hack behind a subaddress of her own": (
        b"<alice=x%other.org@example.ac.uk>",
        SENDER_SYNTAX + "alice=x%other.org@example.ac.uk uses old routing syntax",
    ),
    "percent hack to another user": (b"<bob%example.ac.uk@example.ac.uk>", SENDER_SYNTAX),
    "bang path": (b"<other.org!alice@example.ac.uk>", SENDER_SYNTAX + "other.org!alice@example.ac.uk uses old routing"),
    "bang path without a domain": (b"<other.org!alice>", SENDER_SYNTAX + "'other.org!alice' is not an address"),
    "quoted local part hiding an @": (
        b'<"alice@other.org"@example.ac.uk>',
        SENDER_SYNTAX + '"alice@other.org"@example.ac.uk uses old routing syntax',
    ),
    "quoted own address at a foreign domain": (b'<"alice@example.ac.uk"@other.org>', SENDER_SYNTAX),
    "address literal": (b"<alice@[192.0.2.1]>", SENDER_SYNTAX + "alice@[192.0.2.1] is an address literal"),
    "two @": (
        b"<alice@other.org@example.ac.uk>",
        SENDER_SYNTAX + "'<alice@other.org@example.ac.uk>' is not an address",
    ),
    "bare CR smuggling a second command": (
        b"<alice@example.ac.uk\rRCPT TO:<victim@other.org>>",
        SENDER_SYNTAX + "the command contains control characters",
    ),
    "NUL": (b"<alice@example.ac.uk\x00>", SENDER_SYNTAX + "the command contains control characters"),
    "local part over 64 octets": (b"<" + b"a" * 65 + b"@example.ac.uk>", SENDER_SYNTAX),
    "address over 254 octets": (b"<" + b"a" * 64 + b"@" + LONG_DOMAIN.encode() + b">", SENDER_SYNTAX),
    "invalid UTF-8 with SMTPUTF8": (b"<al\xffice@example.ac.uk> SMTPUTF8", SENDER_SYNTAX + "'al\\udcffice"),
    "invalid UTF-8 without SMTPUTF8": (b"<al\xffice@example.ac.uk>", "553 5.6.7 Non-ASCII sender requires SMTPUTF8"),
    "UTF-8 without SMTPUTF8": (
        "<jörg@example.ac.uk>".encode(),
        "553 5.6.7 Non-ASCII sender requires SMTPUTF8",
    ),
    "someone else's plain address": (b"<bob@example.ac.uk>", "553 5.7.1 alice may not send as bob@example.ac.uk"),
}

#: RCPT TO arguments refused (after a good MAIL FROM), and how each reply begins.
REFUSED_RECIPIENTS = {
    "percent hack": (b"<user%other.org@example.ac.uk>", RECIPIENT_SYNTAX + "user%other.org@example.ac.uk uses old"),
    "bang path": (b"<other.org!user@example.ac.uk>", RECIPIENT_SYNTAX + "other.org!user@example.ac.uk uses old"),
    "bang path without a domain": (b"<other.org!user>", RECIPIENT_SYNTAX + "'other.org!user' is not an address"),
    "quoted local part hiding an @": (b'<"user@other.org"@example.ac.uk>', RECIPIENT_SYNTAX),
    "quoted local part with a space": (b'<"user name"@other.org>', RECIPIENT_SYNTAX),
    "address literal": (b"<user@[192.0.2.1]>", RECIPIENT_SYNTAX + "user@[192.0.2.1] is an address literal"),
    "IPv6 address literal": (b"<user@[IPv6:2001:db8::1]>", RECIPIENT_SYNTAX + "user@[IPv6:2001:db8::1] is an addr"),
    "two @": (b"<a@b@other.org>", RECIPIENT_SYNTAX + "'<a@b@other.org>' is not an address"),
    "bare CR smuggling a second command": (
        b"<bob@other.org\rRCPT TO:<victim@other.org>>",
        RECIPIENT_SYNTAX + "the command contains control characters",
    ),
    "local part over 64 octets": (b"<" + b"b" * 65 + b"@other.org>", RECIPIENT_SYNTAX),
    "address over 254 octets": (b"<" + b"b" * 64 + b"@" + LONG_DOMAIN.encode() + b">", RECIPIENT_SYNTAX),
    "bad domain": (b"<bob@-other.org>", RECIPIENT_SYNTAX),
    "invalid UTF-8 with SMTPUTF8": (b"<j\xffrg@other.org>", RECIPIENT_SYNTAX + "'j\\udcffrg@other.org' is not valid"),
    "UTF-8 without SMTPUTF8": ("<jörg@other.org>".encode(), "553 5.6.7 Non-ASCII recipient requires SMTPUTF8"),
    "null recipient": (b"<>", RECIPIENT_SYNTAX + "a recipient cannot be empty"),
}

#: Recipients the proxy takes, and the RCPT TO line the upstream is sent for each.
ACCEPTED_RECIPIENTS = {
    "source route, dropped": (b"<@relay.example,@relay2.example:bob@other.org>", "RCPT TO:<bob@other.org>"),
    "needlessly quoted local part": (b'<"bob"@other.org>', "RCPT TO:<bob@other.org>"),
    "postmaster without a domain": (b"<Postmaster>", "RCPT TO:<Postmaster>"),
    "UTF-8 with SMTPUTF8": ("<jörg@other.org>".encode(), "RCPT TO:<jörg@other.org>"),
    "case kept": (b"<Bob@Other.ORG>", "RCPT TO:<Bob@Other.ORG>"),
}

#: Senders alice may use in an odd but harmless form, and the address the proxy signs.
ACCEPTED_SENDERS = {
    "source route, dropped": b"<@relay.example:alice@example.ac.uk>",
    "needlessly quoted local part": b'<"alice"@example.ac.uk>',
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    recording = RecordingUpstream()
    yield recording
    recording.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, upstream: RecordingUpstream) -> Iterator[RunningProxy]:
    workdir: Path = tmp_path_factory.mktemp("proxy")
    url = f"sqlite:///{workdir / 'store.sqlite3'}"
    Store.upgrade(url)
    store = Store.open(url)
    add_users(store)
    running = RunningProxy(store, upstream.port, workdir)
    yield running
    running.stop()
    store.close()


@pytest.fixture
def client(proxy: RunningProxy) -> Iterator[RawClient]:
    raw = RawClient(proxy.port)
    yield raw
    raw.close()


def say(client: RawClient, line: bytes) -> str:
    client.send(line + b"\r\n")
    _, text = client.reply()
    return str(text)


@pytest.mark.parametrize("case", REFUSED_SENDERS)
def test_refused_sender_forms(case: str, client: RawClient, upstream: RecordingUpstream) -> None:
    argument, expected = REFUSED_SENDERS[case]
    seen = len(upstream.commands), upstream.connections
    assert say(client, b"MAIL FROM:" + argument).startswith(expected)
    assert say(client, b"RCPT TO:<victim@other.org>").startswith("503 5.5.1 Need MAIL command first")
    assert say(client, b"NOOP").startswith("250")  # the session goes on
    assert (len(upstream.commands), upstream.connections) == seen  # nothing went upstream


@pytest.mark.parametrize("case", REFUSED_RECIPIENTS)
def test_refused_recipient_forms(case: str, client: RawClient, upstream: RecordingUpstream) -> None:
    argument, expected = REFUSED_RECIPIENTS[case]
    seen = len(upstream.commands), upstream.connections
    utf8 = b" SMTPUTF8" if b"\xff" in argument else b""
    assert say(client, b"MAIL FROM:<alice@example.ac.uk>" + utf8).startswith("250")
    assert say(client, b"RCPT TO:" + argument).startswith(expected)
    assert say(client, b"DATA").startswith("554 5.5.1 No valid recipients")
    assert (len(upstream.commands), upstream.connections) == seen  # not even a connection was opened


def deliver(client: RawClient, mail_from: bytes, rcpt_to: bytes) -> None:
    assert say(client, b"MAIL FROM:" + mail_from).startswith("250")
    assert say(client, b"RCPT TO:" + rcpt_to).startswith("250")
    assert say(client, b"DATA").startswith("354")
    client.send(b"From: alice@example.ac.uk\r\nSubject: odd forms\r\n\r\nHello.\r\n.\r\n")
    assert client.reply()[0] == 250


@pytest.mark.parametrize("case", ACCEPTED_RECIPIENTS)
def test_accepted_recipient_forms_reach_the_upstream_as_checked(
    case: str, client: RawClient, upstream: RecordingUpstream
) -> None:
    argument, relayed = ACCEPTED_RECIPIENTS[case]
    before, commands = len(upstream.messages), len(upstream.commands)
    utf8 = b" SMTPUTF8" if not argument.isascii() else b""
    deliver(client, b"<alice@example.ac.uk>" + utf8, argument)
    [message] = upstream.messages[before:]
    assert f"RCPT TO:<{message.recipients[0]}>" == relayed
    assert not any("relay" in command for command in upstream.commands[commands:])


@pytest.mark.parametrize("case", ACCEPTED_SENDERS)
def test_odd_but_harmless_sender_forms_are_signed_as_the_plain_address(
    case: str, client: RawClient, upstream: RecordingUpstream
) -> None:
    before, commands = len(upstream.messages), len(upstream.commands)
    deliver(client, ACCEPTED_SENDERS[case], b"<bob@other.org>")
    [message] = upstream.messages[before:]
    assert message.sender.startswith("alice=") and message.sender.endswith("@example.ac.uk")
    assert not any("relay" in command or '"' in command for command in upstream.commands[commands:])


@pytest.mark.parametrize(
    "address",
    [
        "alice@example.ac.uk",
        "alice=news@example.ac.uk",
        "Bob.Smith@Other.ORG",
        "o'brien@other.org",
        "jörg@exämple.org",
        "a" * 64 + "@other.org",
    ],
)
def test_plain_addresses_have_no_syntax_problem(address: str) -> None:
    assert address_syntax(address) is None
