"""The failure report for recipients a split transaction could not deliver (RFC 3464, RFC 3461).

Only `transaction` needs one: when one envelope sender's copy of a message was accepted upstream
and another's was then refused, the client has to be told 250 (its message is on its way to some
recipients, and a failure reply would make it send those a second copy), so the refused
recipients are reported the way any MTA reports mail it accepted and could not deliver: a
delivery status notification, sent with the null sender (RFC 5321 section 4.5.5) to the
envelope sender of the refused copy. That address is the signed one, so our own verification of
bounces lets the report through.

Action is "failed" and Status a 5.X.X even when the upstream's refusal was temporary: nobody will
try that copy again, so for the user it did fail; the upstream's own reply is kept verbatim in
Diagnostic-Code. Recipients whose NOTIFY does not ask for failures are left out (RFC 3461 section
4.1). RET=FULL returns the whole message; otherwise only its header (RFC 3461 section 4.3).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import secrets
from dataclasses import dataclass

from .esmtp import RcptParams

_STATUS = re.compile(r"[245]\.(\d{1,3})\.(\d{1,3})\b")
_XTEXT_HEX = re.compile(r"\+([0-9A-F]{2})")


@dataclass(frozen=True)
class Failed:
    recipient: str
    params: RcptParams
    reply: str  # the upstream's reply, "554 5.7.1 ...", one line


def wants_report(params: RcptParams) -> bool:
    return params.notify is None or "FAILURE" in params.notify


def status_of(reply: str) -> str:
    """The RFC 3463 status for the report: the reply's own detail, always as a permanent failure."""
    text = reply.partition(" ")[2]
    match = _STATUS.match(text)
    if match:
        return f"5.{match[1]}.{match[2]}"
    return "5.0.0"


def _decode_xtext(value: str) -> str:
    return _XTEXT_HEX.sub(lambda m: chr(int(m[1], 16)), value)


def _header_block(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def failure_report(
    *,
    hostname: str,
    recipient: str,
    failed: list[Failed],
    message: bytes,
    envid: str | None,
    ret: str | None,
    arrival: dt.datetime,
    now: dt.datetime,
) -> bytes:
    """The whole report as CRLF-terminated bytes, ready for `content.encode_for_data`."""
    boundary = f"=_antiforgery_{secrets.token_hex(12)}"
    listing = "\r\n".join(f"  <{f.recipient}>: {f.reply}" for f in failed)
    notice = (
        "Your message was accepted for some of its recipients, but the next mail server refused it\r\n"
        "for the recipients below, after it had been accepted for the others. It was not sent to them.\r\n"
        "You can send it again to just these recipients.\r\n\r\n" + listing + "\r\n"
    )
    fields = [f"Reporting-MTA: dns; {hostname}"]
    if envid:
        fields.append(f"Original-Envelope-Id: {envid}")
    fields.append(f"Arrival-Date: {email.utils.format_datetime(arrival)}")
    per_recipient = []
    for f in failed:
        lines = [f"Final-Recipient: rfc822; {f.recipient}"]
        if f.params.orcpt:
            addr_type, _, address = f.params.orcpt.partition(";")
            lines.append(f"Original-Recipient: {addr_type}; {_decode_xtext(address)}")
        lines += ["Action: failed", f"Status: {status_of(f.reply)}", f"Diagnostic-Code: smtp; {f.reply}"]
        per_recipient.append("\r\n".join(lines))
    status = "\r\n".join(fields) + "\r\n\r\n" + "\r\n\r\n".join(per_recipient) + "\r\n"
    if ret == "FULL":
        returned_type, returned = "message/rfc822", message
    else:
        returned_type, returned = "text/rfc822-headers", _header_block(message)
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
        f"To: <{recipient}>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"Date: {email.utils.format_datetime(now)}\r\n"
        f"Message-ID: <{secrets.token_hex(12)}@{hostname}>\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
        "This is a MIME-encapsulated delivery status notification.\r\n"
    )
    parts = [
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Description: Notification\r\n\r\n"
        + notice,
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n" + status,
        f"--{boundary}\r\nContent-Type: {returned_type}\r\n\r\n",
    ]
    body = "".join(parts).encode("utf-8", "surrogateescape") + returned
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return head.encode("utf-8", "surrogateescape") + body + f"--{boundary}--\r\n".encode("ascii")
