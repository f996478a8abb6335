"""Message data in and out (RFC 5321 sections 4.1.1.4 and 4.5.2), with no way to smuggle a second message.

SMTP smuggling (CVE-2023-51764 Postfix, -51765 Sendmail, -51766 Exim): a client ends its message
with something one server takes for data and the next server takes for end-of-data, such as
`<LF>.<LF>`, `<CR>.<CR>`, `<CR><LF>.<LF>` or `<LF>.<CR><LF>`, followed by a whole second SMTP
transaction with a forged sender. If we forwarded those bytes as they came, an upstream that reads a
bare LF as a line end (Postfix before `smtpd_forbid_bare_newline`; Debian's 3.7 still defaults to
"no") would deliver the forged message, and the forged sender would reach the Internet through the
very hop that signs senders.

The choice: normalise, don't refuse. On the way in, only `<CR><LF>.<CR><LF>` ends the data (RFC 5321
section 4.1.1.4), and a line's leading dot is removed (section 4.5.2); every bare CR and bare LF left
in the content becomes CRLF. On the way out (`encode_for_data`) every line starting with a dot is
dot-stuffed again and the one terminator is appended. Whatever the next hop counts as a line end, it
then finds no end-of-data before ours: the smuggled commands arrive as lines of text in the body of
the one message. Refusing bare line endings with `550 5.6.0` (Postfix 3.9's `smtpd_forbid_bare_newline`)
would be equally safe, but a submission server hears from scripts and old clients that write bare
LF by mistake, and the message they meant is unambiguous; DKIM signs the CRLF form anyway (RFC 6376
section 5.3). aiosmtpd's own DATA loop is not used: it passes bare LF through untouched and cannot
report the line-length limit with its own code.

Pure, sans-I/O (STYLE, h11): bytes in, a verdict and a message out; the SMTP session feeds it.
"""

from __future__ import annotations

import enum
import re

_ANY_LINE_END = re.compile(rb"\r\n|\r|\n")
_LINE_START_DOT = re.compile(rb"^\.", re.MULTILINE)
CRLF = b"\r\n"


class DataError(enum.Enum):
    TOO_BIG = "too_big"
    LINE_TOO_LONG = "line_too_long"


def normalise(data: bytes) -> bytes:
    """Every line ending, bare CR and bare LF included, as CRLF."""
    crlf = data.count(CRLF)
    if data.count(b"\r") == crlf and data.count(b"\n") == crlf:
        return data  # every CR and every LF is part of a CRLF already: three scans, not a rewrite
    return _ANY_LINE_END.sub(CRLF, data)


def encode_for_data(message: bytes) -> bytes:
    """The octets to send after a 354: CRLF lines, leading dots doubled, then `.CRLF` (RFC 5321 4.5.2).

    Normalises again, so no caller can ever hand the next hop a bare CR or LF.
    """
    message = normalise(message)
    if message and not message.endswith(CRLF):
        message += CRLF
    if message.startswith(b".") or b"\n." in message:  # a line that starts with a dot
        message = _LINE_START_DOT.sub(b"..", message)
    return message + b"." + CRLF


def _plain_line(data: bytes) -> bool:
    """One whole line, CRLF only at its end, no leading dot: content exactly as it came."""
    return data.endswith(CRLF) and data.count(b"\r") == 1 and data.count(b"\n") == 1 and not data.startswith(b".")


class DataReceiver:
    """Receives the octets after a 354; `feed` returns what follows the end-of-data, or None for "more".

    Memory stays bounded: after a limit is exceeded the content is dropped, but the stream is still
    read to its end, so the reply comes after the data as RFC 5321 section 4.2.5 expects.
    """

    def __init__(self, max_size: int, max_line_length: int) -> None:
        self.max_size = max_size
        self.max_line_length = max_line_length
        self.error: DataError | None = None
        self.bare_line_ends = 0  # bare CR or LF turned into CRLF, for the log
        self.size = 0  # octets of the normalised message
        self._pending = bytearray()
        self._at_line_start = True
        self._column = 0  # octets on the current output line
        self._parts: list[bytes] = []

    @property
    def message(self) -> bytes:
        """The message, CRLF lines, without transparency dots; only meaningful without `error`."""
        return b"".join(self._parts)

    def feed(self, data: bytes) -> bytes | None:
        if self._at_line_start and not self._pending and _plain_line(data):
            self._add_line(data)  # the session feeds line by line: most calls are one ordinary line
            return None
        self._pending += data
        pending = self._pending
        while pending:
            if self._at_line_start:
                if pending.startswith(b".\r\n"):
                    rest = bytes(pending[3:])
                    pending.clear()
                    return rest
                if pending == b"." or pending == b".\r":
                    return None  # might become the terminator
                if pending.startswith(b"."):
                    del pending[0]  # transparency (RFC 5321 section 4.5.2)
                self._at_line_start = False
                continue
            end = pending.find(CRLF)
            if end >= 0:
                self._emit(bytes(pending[:end]) + CRLF)
                del pending[: end + 2]
                self._at_line_start = True
                continue
            keep = 1 if pending.endswith(b"\r") else 0  # maybe the first half of a CRLF
            self._emit(bytes(pending[: len(pending) - keep]))
            del pending[: len(pending) - keep]
            return None
        return None

    def _emit(self, raw: bytes) -> None:
        """Add raw content (CRLF only at its very end, if at all), normalising bare CR and LF."""
        body = raw[:-2] if raw.endswith(CRLF) else raw
        bare = body.count(b"\r") + body.count(b"\n")
        if bare:
            self.bare_line_ends += bare
            body = normalise(body)
        piece = body + raw[len(raw) - 2 :] if raw.endswith(CRLF) else body
        self.size += len(piece)
        if self.error is None and self.size > self.max_size:
            self._fail(DataError.TOO_BIG)
        *finished, last = piece.split(CRLF)
        for line in finished:
            self._check_line(self._column + len(line))
            self._column = 0
        self._column += len(last)
        self._check_line(self._column)
        if self.error is None:
            self._parts.append(piece)

    def _add_line(self, line: bytes) -> None:
        """`_emit` for one whole line with nothing to normalise, at the start of an output line."""
        self.size += len(line)
        if self.error is None and self.size > self.max_size:
            self._fail(DataError.TOO_BIG)
        self._check_line(len(line) - 2)
        if self.error is None:
            self._parts.append(line)

    def _check_line(self, length: int) -> None:
        if self.error is None and length > self.max_line_length:
            self._fail(DataError.LINE_TOO_LONG)

    def _fail(self, error: DataError) -> None:
        self.error = error
        self._parts.clear()
