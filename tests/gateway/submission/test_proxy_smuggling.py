"""SMTP smuggling (CVE-2023-51764, -51765, -51766) through the proxy into real Postfix: one message in, one out.

A raw socket client sends, inside one DATA, a message that "ends" with a non-standard end-of-data
followed by a whole second transaction with a forged sender. The Postfix used here (3.7, with
`smtpd_forbid_bare_newline = no`, Debian's default) is itself vulnerable: the control test shows it
splitting the same bytes into two messages when they come straight from a client. Through the
proxy, exactly one message arrives at the next hop, from the signed sender, with the would-be
second transaction as lines of its body.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from proxy_harness import RawClient, RunningProxy, add_users

from gateway.store import Store

SMUGGLED = (
    b"MAIL FROM:<forged@example.ac.uk>\r\nRCPT TO:<victim@other.org>\r\nDATA\r\n"
    b"Subject: forged\r\n\r\nforged body\r\n.\r\n"
)

# The variant, and how the body reads at the next hop (smtp-sink writes LF line ends).
VARIANTS = {
    "LF.LF": (b"\n.\n", "hello\n.\nMAIL FROM:<forged@example.ac.uk>\n"),
    "CR.CR": (b"\r.\r", "hello\n.\nMAIL FROM:<forged@example.ac.uk>\n"),
    "CRLF.LF": (b"\r\n.\n", "hello\n\nMAIL FROM:<forged@example.ac.uk>\n"),  # the dot: transparency (RFC 5321 4.5.2)
    "LF.CRLF": (b"\n.\r\n", "hello\n.\nMAIL FROM:<forged@example.ac.uk>\n"),
    "CR.CRLF": (b"\r.\r\n", "hello\n.\nMAIL FROM:<forged@example.ac.uk>\n"),
    "CRLF.CR": (b"\r\n.\r", "hello\n\nMAIL FROM:<forged@example.ac.uk>\n"),
}


def arrived(sink: Any, wait: float = 2.0) -> list[str]:
    """Everything the sink got, after waiting long enough for a second message to show up."""
    time.sleep(wait)
    return list(sink.messages(0))


@pytest.mark.parametrize("variant", VARIANTS)
def test_smuggled_transaction_stays_inside_the_one_message(
    variant: str, sqlite_store: Store, postfix: Any, smtp_sink: Any, start_proxy: Callable[..., RunningProxy]
) -> None:
    ending, expected_body = VARIANTS[variant]
    add_users(sqlite_store)
    upstream = postfix()
    proxy = start_proxy(sqlite_store, upstream.port)
    client = RawClient(proxy.port)
    try:
        client.command(b"MAIL FROM:<alice@example.ac.uk>", 250)
        client.command(b"RCPT TO:<bob@other.org>", 250)
        client.command(b"DATA", 354)
        client.send(b"Subject: real\r\n\r\nhello" + ending + SMUGGLED)
        client.expect(250)  # one reply: the smuggled commands were never commands
        client.command(b"NOOP", 250)
        client.command(b"QUIT", 221)
    finally:
        client.close()
    [message] = arrived(smtp_sink)
    assert re.search(r"^X-Mail-Args: <alice=s\w+@example\.ac\.uk>", message, re.MULTILINE)
    assert expected_body in message and "forged body\n" in message
    assert "forged@" not in upstream.log() and "victim@" not in upstream.log()


@pytest.mark.parametrize("variant", ["LF.LF", "CRLF.LF", "LF.CRLF"])
def test_control_the_same_bytes_straight_into_postfix_do_smuggle(variant: str, postfix: Any, smtp_sink: Any) -> None:
    """Without the proxy this Postfix takes the bare-LF endings for end-of-data: the test above means something."""
    upstream = postfix()
    with socket.create_connection(("127.0.0.1", upstream.port), timeout=10) as sock:
        sock.sendall(
            b"EHLO raw.example.org\r\nMAIL FROM:<alice@example.ac.uk>\r\nRCPT TO:<bob@other.org>\r\nDATA\r\n"
        )
        time.sleep(0.5)
        sock.sendall(b"Subject: real\r\n\r\nhello" + VARIANTS[variant][0] + SMUGGLED + b"QUIT\r\n")
        while sock.recv(65536):
            pass
    messages = arrived(smtp_sink)
    assert len(messages) == 2
    assert any(re.search(r"^X-Mail-Args: <forged@example\.ac\.uk>", m, re.MULTILINE) for m in messages)
