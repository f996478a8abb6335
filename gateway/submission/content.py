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
#: The end of data (RFC 5321 section 4.1.1.4): a line holding a single dot.
END_OF_DATA = b"\r\n.\r\n"
#: The end of data as the very first line: an empty message.
_FIRST_LINE_END = b".\r\n"


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


class DataReceiver:
    """Receives the octets after a 354; `feed` returns what follows the end-of-data, or None for "more".

    Only `CRLF.CRLF` ends the data, or `.CRLF` as its very first line; a line's leading dot is
    removed (section 4.5.2) and bare CR and LF become CRLF. The receiver holds back only the octets
    that might begin an end of data (`CR`, `CRLF`, `CRLF.`, `CRLF.CR`: four at most) and handles
    everything before them at once, whatever the size of the chunk: the session reads chunks rather
    than lines (`lookahead`), and per-line work was the largest cost of relaying a message (issue 7).

    The limits are judged line by line, in the order the lines arrive, whatever the chunks: the
    first line that takes the message over its size (552) or is too long (500) decides, and a line
    that does both makes the message too big. Memory stays bounded: once a limit is exceeded the
    content is dropped (and nothing is kept while a line already too long waits for its end), but
    the stream is still read to its end, so the reply comes after the data as RFC 5321 section
    4.2.5 expects.
    """

    def __init__(self, max_size: int, max_line_length: int) -> None:
        self.max_size = max_size
        self.max_line_length = max_line_length
        self.error: DataError | None = None
        self.bare_line_ends = 0  # bare CR or LF turned into CRLF, for the log
        self.size = 0  # octets of the normalised message
        self._pending = b""  # held back: what might begin an end of data
        self._first = True  # at the very start, where `.CRLF` alone ends the data
        self._column = 0  # octets on the current output line
        self._long_line = False  # the current line is too long: its end decides which error
        self._parts: list[bytes] = []

    @property
    def message(self) -> bytes:
        """The message, CRLF lines, without transparency dots; only meaningful without `error`."""
        return b"".join(self._parts)

    @property
    def lookahead(self) -> int:
        """How many octets the next read must take, exactly, to tell whether the data ends there;
        0 when the end can only be a whole `CRLF.CRLF` yet to come, so that a read up to the first
        one (`readuntil`) is safe. Either way no read passes the end of data, and whatever the
        client sent after it stays in the stream for the command loop. A client that ends its
        message sends at least this many octets more, so an exact read never waits in vain."""
        if self._first:
            return len(_FIRST_LINE_END) - len(self._pending)
        return len(END_OF_DATA) - len(self._pending) if self._pending else 0

    def feed(self, data: bytes) -> bytes | None:
        if self._pending:
            data, self._pending = self._pending + data, b""
        if self._first:
            if data.startswith(_FIRST_LINE_END):
                return data[len(_FIRST_LINE_END) :]
            if _FIRST_LINE_END.startswith(data):  # b"", b"." or b".\r": might still become the end
                self._pending = data
                return None
            self._first = False
            if data.startswith(b"."):
                data = data[1:]  # transparency (RFC 5321 section 4.5.2)
        end = data.find(END_OF_DATA)
        if end >= 0:
            self._add(data[: end + 2])
            return data[end + len(END_OF_DATA) :]
        for keep in (4, 3, 2, 1):
            if data.endswith(END_OF_DATA[:keep]):
                self._pending = data[-keep:]
                data = data[:-keep]
                break
        self._add(data)
        return None

    def _add(self, raw: bytes) -> None:
        """Content with no end of data in it, not cut inside a CRLF: each CRLF in it ends a line."""
        if not raw:
            return
        if b"\r\n." in raw:
            raw = raw.replace(b"\r\n.", CRLF)  # one dot off each line that starts with one
        bare = raw.count(b"\r") + raw.count(b"\n") - 2 * raw.count(CRLF)
        piece = raw
        if bare:
            self.bare_line_ends += bare
            piece = _ANY_LINE_END.sub(CRLF, raw)
        before = self.size
        self.size += len(piece)
        if self.error is not None:
            return
        last_end = piece.rfind(CRLF)
        column = self._column + len(piece) if last_end < 0 else len(piece) - last_end - len(CRLF)
        longest = self._column + len(piece)  # at least as long as the longest line
        if longest > self.max_line_length and last_end >= 0:
            lines = piece.split(CRLF)
            longest = max(self._column + len(lines[0]), max(map(len, lines)))
        if self.size <= self.max_size and longest <= self.max_line_length and not self._long_line:
            self._column = column
            self._parts.append(piece)
        else:
            self._judge(raw, before)  # ends in an error, or with a line too long awaiting its end

    def _judge(self, raw: bytes, size: int) -> None:
        """`_add` line by line, when a limit is exceeded or a line too long awaits its end."""
        segments = raw.split(CRLF)
        for index, segment in enumerate(segments):
            ends = index < len(segments) - 1
            piece = normalise(segment)
            size += len(piece) + (len(CRLF) if ends else 0)
            if size > self.max_size:
                self._fail(DataError.TOO_BIG)
                return
            for number, line in enumerate(piece.split(CRLF)):  # a bare CR or LF made several
                self._column = len(line) if number else self._column + len(line)
                if self._column > self.max_line_length:
                    self._long_line = True
                    self._parts.clear()
            if ends:
                if self._long_line:
                    self._fail(DataError.LINE_TOO_LONG)
                    return
                self._column = 0

    def _fail(self, error: DataError) -> None:
        self.error = error
        self._parts.clear()
