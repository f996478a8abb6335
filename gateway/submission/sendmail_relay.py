"""Hand a locally submitted message to the upstream MTA by SMTP (RFC 5321), all or nothing if we can.

One transaction per envelope sender: most recipients share the message's one signed sender,
recipients with a fixed tag get their own (design invariant 1). Every transaction is opened, and
every MAIL and RCPT accepted, before any DATA is sent, each on its own connection: a refused
recipient then stops the whole message before anyone has it, so the caller's retry (exit 75)
sends no duplicates. Only a failure at the end of DATA, after an earlier transaction was already
accepted, can leave a message half delivered; the error line then says who has it.

Exit statuses (sysexits.h): a 4xx reply, a refused connection, a timeout or a dropped connection
is EX_TEMPFAIL (the caller keeps the message and tries again); a 5xx to RCPT is EX_NOUSER, to the
message data EX_DATAERR, anything else 5xx EX_UNAVAILABLE. Nothing is 0 unless every recipient
got a 250 (or 251) and every DATA a 250.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from .sendmail_args import SendmailError, Sysexit


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  # "" is the null sender
    recipients: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Upstream:
    host: str
    port: int
    helo_name: str = ""  # "" = this host's FQDN
    timeout: float = 120.0

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def group_by_sender(senders: dict[str, str]) -> list[Envelope]:
    """recipient -> envelope sender, to one envelope per sender, in the recipients' order."""
    groups: dict[str, list[str]] = {}
    for recipient, sender in senders.items():
        groups.setdefault(sender, []).append(recipient)
    return [Envelope(sender, tuple(recipients)) for sender, recipients in groups.items()]


def _reply(code: int, text: bytes | str) -> str:
    decoded = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {' '.join(decoded.split())}"


def _refused(
    stage: str, code: int, text: bytes | str, upstream: Upstream, delivered: list[str], permanent: Sysexit
) -> SendmailError:
    status = Sysexit.TEMPFAIL if code < 500 else permanent
    return SendmailError(status, f"upstream {upstream} refused {stage}: {_reply(code, text)}{_so_far(delivered)}")


def _so_far(delivered: list[str]) -> str:
    if not delivered:
        return " (nothing was sent)"
    return f" (already delivered to {', '.join(delivered)}; not to the others)"


@contextmanager
def _connection(upstream: Upstream) -> Iterator[smtplib.SMTP]:
    smtp = smtplib.SMTP(upstream.host, upstream.port, upstream.helo_name or socket.getfqdn(), upstream.timeout)
    try:
        yield smtp
    finally:
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            smtp.close()


def _open(smtp: smtplib.SMTP, envelope: Envelope, eight_bit: bool, upstream: Upstream) -> None:
    """EHLO, MAIL and every RCPT of one transaction; SendmailError on the first refusal."""
    smtp.ehlo_or_helo_if_needed()
    options = ["BODY=8BITMIME"] if eight_bit and smtp.has_extn("8bitmime") else []
    code, text = smtp.mail(envelope.sender, options)
    if code != 250:
        raise _refused(f"MAIL FROM:<{envelope.sender}>", code, text, upstream, [], Sysexit.UNAVAILABLE)
    for recipient in envelope.recipients:
        code, text = smtp.rcpt(recipient)
        if code not in (250, 251):
            raise _refused(f"RCPT TO:<{recipient}>", code, text, upstream, [], Sysexit.NOUSER)


def deliver(upstream: Upstream, envelopes: list[Envelope], data: bytes) -> None:
    """Send `data` (CRLF lines) in every envelope; return only if the upstream accepted them all."""
    eight_bit = any(byte > 127 for byte in data)
    delivered: list[str] = []
    try:
        with ExitStack() as stack:
            connections = []
            for envelope in envelopes:
                smtp = stack.enter_context(_connection(upstream))
                _open(smtp, envelope, eight_bit, upstream)
                connections.append((smtp, envelope))
            for smtp, envelope in connections:
                try:
                    code, text = smtp.data(data)
                except smtplib.SMTPDataError as exc:  # no 354 for DATA
                    refusal = exc.smtp_code, exc.smtp_error
                    raise _refused("DATA", *refusal, upstream, delivered, Sysexit.DATAERR) from None
                if code != 250:
                    raise _refused("the message", code, text, upstream, delivered, Sysexit.DATAERR)
                delivered += envelope.recipients
    except smtplib.SMTPResponseException as exc:  # a greeting other than 220, or EHLO and HELO refused
        stage = "the connection" if isinstance(exc, smtplib.SMTPConnectError) else "EHLO"
        raise _refused(stage, exc.smtp_code, exc.smtp_error, upstream, delivered, Sysexit.UNAVAILABLE) from None
    except (smtplib.SMTPException, OSError) as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (getattr(exc, "strerror", None) or str(exc) or "failed")
        message = f"upstream {upstream}: {why}; try again later" + _so_far(delivered)
        raise SendmailError(Sysexit.TEMPFAIL, message) from None
