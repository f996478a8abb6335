"""Postfix SMTPD access policy delegation protocol (Postfix SMTPD_POLICY_README), sans I/O.

A request is `name=value` lines ending in an empty line; the reply is one `action=...` line and
an empty line. The parser is a pure function of bytes, so it is tested without a socket; the
server in `policy_server.py` only moves bytes. Input is never trusted: line and request sizes are
bounded, and anything malformed ends the connection rather than being guessed at.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_LINE = 4096  # Postfix values are bounded by SMTP line lengths; this is generous
MAX_ATTRIBUTES = 128  # Postfix 3.x sends about 40


class PolicyProtocolError(ValueError):
    """The peer does not speak the policy protocol; the connection is closed."""


@dataclass
class PolicyParser:
    """Feed bytes in; take complete requests (attribute dicts) out."""

    #: Attribute names to keep (as bytes); None keeps all. Postfix sends about 40 and an adapter
    #: reads a handful: decoding only those is a tenth of a request's CPU (issue 7).
    keep: frozenset[bytes] | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _current: dict[str, str] = field(default_factory=dict)
    _count: int = 0  # attributes in the current request, kept or not

    def feed(self, data: bytes) -> list[dict[str, str]]:
        """Requests completed by `data`. Complete lines are split off in one pass (issue 7: trimming
        the buffer line by line was a fifth of a policy request's CPU)."""
        if not self._buffer and not self._count and (whole := self._whole_request(data)) is not None:
            return [whole]
        self._buffer += data
        requests: list[dict[str, str]] = []
        if b"\n" in data:
            lines = bytes(self._buffer).split(b"\n")
            self._buffer = bytearray(lines.pop())  # the incomplete last line, if any
            for raw in lines:
                line = raw.rstrip(b"\r")
                if len(line) > MAX_LINE:
                    raise PolicyProtocolError("policy request line too long")
                if not line:
                    if self._count:
                        requests.append(self._current)
                        self._current, self._count = {}, 0
                    continue
                name, sep, value = line.partition(b"=")
                if not sep or not name:
                    raise PolicyProtocolError("policy request line is not name=value")
                if self._count >= MAX_ATTRIBUTES:
                    raise PolicyProtocolError("too many attributes in one policy request")
                self._count += 1
                if self.keep is None or name in self.keep:
                    # Postfix xtext-encodes nothing here; values are bytes from SMTP, possibly UTF-8.
                    self._current[name.decode("ascii", "replace")] = value.decode("utf-8", "surrogateescape")
        # +1: the CR of a line of MAX_LINE octets may arrive before its LF (found by fuzzing).
        if len(self._buffer) > MAX_LINE + 1:
            raise PolicyProtocolError("policy request line too long")
        return requests


    def _whole_request(self, data: bytes) -> dict[str, str] | None:
        """The request if `data` is exactly one well-formed request, else None for the line loop.

        Postfix writes each request whole, in one write, and waits for the reply: almost every
        read is one request. For such a read, no line can be too long (the whole is shorter than
        one line may be), there is no CR to strip and no blank line to skip, so each line only
        needs splitting: half the cost of the line loop (issue 7). Anything unusual goes to the
        line loop, which decides; the fuzz tests hold the two to the same answers.
        """
        if (
            len(data) > MAX_LINE
            or not data.endswith(b"\n\n")
            or data.find(b"\n\n") != len(data) - 2
            or data.startswith(b"\n")
            or b"\r" in data
            or data.count(b"\n") > MAX_ATTRIBUTES + 1
        ):
            return None
        keep = self.keep
        request: dict[str, str] = {}
        for line in data[:-2].split(b"\n"):
            name, sep, value = line.partition(b"=")
            if not sep or not name:
                return None  # the line loop raises the error
            if keep is None or name in keep:
                request[name.decode("ascii", "replace")] = value.decode("utf-8", "surrogateescape")
        return request


def format_reply(action: str) -> bytes:
    """One `action=` line; newlines in the text would let a reason inject a second reply.

    Octets of a request that were not UTF-8 come back as `?`, not raw: Postfix passes the text on
    in its SMTP reply, which must stay valid UTF-8 (tests/callout/test_bad_input.py).
    """
    clean = action.replace("\r", " ").replace("\n", " ")
    return f"action={clean}\n\n".encode("utf-8", "replace")
