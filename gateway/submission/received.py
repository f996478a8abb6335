"""The Received: header the proxy adds for its hop (RFC 5321 section 4.4, RFC 3848, RFC 6531).

Every SMTP server that takes a message prepends a trace field: who connected (`from`, the HELO
name and the address it came from), who took it (`by`), how (`with`), an `id` for the logs, and
`for` the recipient when there is only one (RFC 5321 section 7.6: with several, naming one in every
copy would disclose the others' Bcc). `with` is the protocol type of RFC 3848: ESMTP plus S for
TLS and A for an authenticated client, so a submission is ESMTPSA; UTF8SMTP for SMTPUTF8 mail
(RFC 6531 section 3.7.3). The TLS version and cipher go in a comment, as Postfix writes them; the
login stays out, as with Postfix's default, so the header names no account.

A HELO name is the client's claim and nothing more: one that is not a syntactically valid domain
or address literal is left out rather than copied into a header, so a client cannot write trace
text of its own.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import re
from dataclasses import dataclass

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")
_LITERAL = re.compile(r"\[(?:IPv6:)?[0-9A-Fa-f:.]{2,45}\]")


@dataclass(frozen=True)
class TLSInfo:
    version: str  # "TLSv1.3"
    cipher: str  # "TLS_AES_256_GCM_SHA384"
    bits: int

    def comment(self) -> str:
        return f"(using {self.version} with cipher {self.cipher} ({self.bits}/{self.bits} bits))"


def address_literal(ip: str) -> str:
    """RFC 5321 section 4.1.3: [192.0.2.1] or [IPv6:2001:db8::1]."""
    try:
        parsed = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return "[unknown]"
    if isinstance(parsed, ipaddress.IPv6Address):
        return f"[{parsed.ipv4_mapped}]" if parsed.ipv4_mapped is not None else f"[IPv6:{parsed}]"
    return f"[{parsed}]"


def protocol(*, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    return ("UTF8SMTP" if smtputf8 else "ESMTP") + ("S" if tls else "") + ("A" if authenticated else "")


def received(
    *,
    helo: str | None,
    client_ip: str,
    hostname: str,
    tls: TLSInfo | None,
    authenticated: bool,
    smtputf8: bool,
    transaction_id: str,
    recipients: list[str],
    now: dt.datetime,
) -> bytes:
    """The complete header field, folded, ending in CRLF; UTF-8 only if the message is SMTPUTF8."""
    literal = address_literal(client_ip)
    claimed = helo if helo and (_DOMAIN.fullmatch(helo) or _LITERAL.fullmatch(helo)) else literal
    lines = [f"Received: from {claimed} ({literal})"]
    if tls is not None:
        lines.append(tls.comment())
    with_ = protocol(tls=tls is not None, authenticated=authenticated, smtputf8=smtputf8)
    lines.append(f"by {hostname} (antiforgery) with {with_} id {transaction_id}")
    stamp = email.utils.format_datetime(now)
    only = recipients[0] if len(recipients) == 1 else None
    if only is not None and (smtputf8 or only.isascii()):
        lines.append(f"for <{only}>; {stamp}")
    else:
        lines[-1] += ";"
        lines.append(stamp)
    return "\r\n\t".join(lines).encode("utf-8" if smtputf8 else "ascii", "surrogateescape") + b"\r\n"
