"""The message a local program pipes into sendmail: lines, header fields, recipients, Bcc.

Pure functions of bytes (no I/O), so every rule is tested without a process or a socket:

- Input lines end in LF or CRLF; output lines end in CRLF (RFC 5322 section 2.1, RFC 5321
  section 2.3.8). Without `-i` a line holding a single dot ends the input (sendmail(8)).
- The header ends at the first empty line, or at the first line that is neither a header field
  (RFC 5322 section 2.2: a name of printable ASCII but ":", then ":") nor a continuation: that
  line starts the body, as Postfix's cleanup does. A leading mbox "From " line is dropped.
- `-t` recipients come from To:, Cc: and Bcc:, or from Resent-To:, Resent-Cc: and Resent-Bcc:
  when the message has any (RFC 5322 section 3.6.6: a resent message goes to the resent
  recipients). Bcc: and Resent-Bcc: are always removed (section 3.6.3: blind recipients must
  not be disclosed).
- A message without From:, Date: or Message-ID: gets them (RFC 5322 section 3.6: From and Date
  are required; RFC 6409 section 8 lets the submission agent add Date and Message-ID). Cheap
  and correct here, because we know the user; otherwise the MTA would add From: with the signed
  envelope sender, which the user never chose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import formataddr, formatdate, getaddresses, make_msgid

from .plan import address_syntax
from .sendmail_args import SendmailError, Sysexit

_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")  # RFC 5322 ftext, then ":" (obsolete WSP before it tolerated)
#: local@domain in printable ASCII: a host name or an address literal (RFC 5321 section 4.1.2), no SMTPUTF8.
_ADDRESS = re.compile(r"[!-?A-~]+@(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[!-Z^-~]+\])")
BLIND = frozenset({"bcc", "resent-bcc"})


@dataclass
class LocalMessage:
    #: Complete header fields, continuation lines included, each ending in CRLF.
    headers: list[bytes] = field(default_factory=list)
    body: bytes = b""

    def names(self) -> set[str]:
        return {field_name(h) for h in self.headers}

    def values(self, name: str) -> list[str]:
        return [field_value(h) for h in self.headers if field_name(h) == name]

    def to_bytes(self) -> bytes:
        return b"".join(self.headers) + b"\r\n" + self.body


def field_name(header: bytes) -> str:
    return header.partition(b":")[0].strip().decode("ascii", "replace").lower()


def field_value(header: bytes) -> str:
    """The value unfolded (RFC 5322 section 2.2.3); 8-bit octets kept as surrogates, not guessed."""
    value = header.partition(b":")[2]
    return re.sub(rb"\r\n(?=[ \t])", b"", value).strip().decode("utf-8", "surrogateescape")


def read_message(data: bytes, ignore_dots: bool) -> LocalMessage:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = [line.removesuffix(b"\r") for line in lines]
    if not ignore_dots and b"." in lines:
        lines = lines[: lines.index(b".")]
    if lines and lines[0].startswith(b"From "):
        lines.pop(0)
    message = LocalMessage()
    body_start = len(lines)
    for index, line in enumerate(lines):
        if line == b"":
            body_start = index + 1
            break
        if line[:1] in (b" ", b"\t") and message.headers:
            message.headers[-1] += line + b"\r\n"
        elif _FIELD.match(line):
            message.headers.append(line + b"\r\n")
        else:
            body_start = index
            break
    message.body = b"".join(line + b"\r\n" for line in lines[body_start:])
    return message


def checked_address(address: str, what: str) -> str:
    """A plain ASCII local@domain, or SendmailError(NOUSER) saying what is wrong with it.

    The proxy's rule (`plan.address_syntax`: no routing syntax, address literals or overlong parts)
    holds here too, so that local submission is no way around it."""
    if not _ADDRESS.fullmatch(address):
        raise SendmailError(Sysexit.NOUSER, f"{what} {address!r} is not a full address (user@domain)")
    if (problem := address_syntax(address)) is not None:
        raise SendmailError(Sysexit.NOUSER, f"{what} refused: {problem}")
    return address


def parse_recipients(values: list[str], what: str) -> list[str]:
    """Addresses from arguments or header values; "Name <a@b>", lists and groups allowed."""
    found = []
    for _, address in getaddresses(values):
        if address:
            found.append(checked_address(address, what))
    return found


def header_recipients(message: LocalMessage) -> list[str]:
    names = ("resent-to", "resent-cc", "resent-bcc")
    if not message.names() & set(names):
        names = ("to", "cc", "bcc")
    return parse_recipients([v for name in names for v in message.values(name)], "header recipient")


def remove_blind(message: LocalMessage) -> None:
    message.headers = [h for h in message.headers if field_name(h) not in BLIND]


def complete(message: LocalMessage, from_address: str, full_name: str, now: float) -> None:
    """Add From:, Date: and Message-ID: where missing (RFC 5322 section 3.6)."""
    present = message.names()
    added = []
    if "from" not in present:
        added.append("From: " + formataddr((full_name, from_address), charset="utf-8"))
    if "date" not in present:
        added.append("Date: " + formatdate(now, localtime=True))
    if "message-id" not in present:
        added.append("Message-ID: " + make_msgid(domain=from_address.rpartition("@")[2] or None))
    message.headers += [line.encode("ascii") + b"\r\n" for line in added]
