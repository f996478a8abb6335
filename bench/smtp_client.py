"""A minimal SMTP client for the callout benchmark: the dialogue a verifying MTA has with us.

EHLO once per connection, then for each address `MAIL FROM:<>`, `RCPT TO:<address>`, `RSET`, each
command waiting for its reply (no pipelining), as Exim's and Postfix's callouts do. One callout is
those three round trips; its latency is measured from MAIL to the reply to RSET.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from .client import Connection, Protocol, Run


def _smtp_split(buffer: bytes) -> tuple[bytes, bytes] | None:
    """A whole reply: lines up to one whose fourth octet is a space (RFC 5321 section 4.2.1)."""
    at = 0
    while (end := buffer.find(b"\r\n", at)) >= 0:
        if buffer[at + 3 : at + 4] != b"-":
            return buffer[: end + 2], buffer[end + 2 :]
        at = end + 2
    return None


SMTP = Protocol("smtp", lambda line: line.encode() + b"\r\n", _smtp_split)


def open_session(port: int) -> Connection:
    connection = Connection(port, SMTP)
    while (found := SMTP.split(connection.buffer)) is None:
        connection.buffer += connection.sock.recv(65536)
    greeting, connection.buffer = found
    if not greeting.startswith(b"220"):
        raise ConnectionError(f"no greeting: {greeting!r}")
    if not connection.ask(SMTP.encode("EHLO bench.example.net")).startswith(b"250"):
        raise ConnectionError("EHLO refused")
    return connection


def callouts(connection: Connection, recipients: Sequence[str], total: int, deadline: float | None = None) -> Run:
    run = Run(replies=Counter())
    mail, rset = SMTP.encode("MAIL FROM:<>"), SMTP.encode("RSET")
    started = time.perf_counter()
    for n in range(total):
        rcpt = SMTP.encode(f"RCPT TO:<{recipients[n % len(recipients)]}>")
        begin = time.perf_counter_ns()
        try:
            connection.ask(mail)
            reply = connection.ask(rcpt)
            connection.ask(rset)
        except OSError:
            run.errors += 1
            break
        run.latencies.append(time.perf_counter_ns() - begin)
        run.replies[reply[:3].decode(errors="replace")] += 1
        if deadline is not None and n % 500 == 499 and time.monotonic() > deadline:
            break
    run.seconds = time.perf_counter() - started
    return run
