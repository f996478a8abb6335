"""Netstrings (D. J. Bernstein, "Netstrings", 1997), as spoken by Postfix socketmap tables, sans I/O.

`12:hello world!,` carries twelve bytes. Postfix's socketmap client (socketmap_table(5)) sends
`name key` in one netstring and expects `OK value`, `NOTFOUND `, `TEMP reason`, `TIMEOUT reason`
or `PERM reason` back; it limits replies to 100000 bytes, and so do we for requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_NETSTRING = 100_000
_MAX_DIGITS = len(str(MAX_NETSTRING))


class NetstringError(ValueError):
    """Malformed or oversized netstring; the connection is closed."""


def encode(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


@dataclass
class NetstringParser:
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        out: list[bytes] = []
        while self._buffer:
            colon = self._buffer.find(b":", 0, _MAX_DIGITS + 1)
            if colon < 0:
                if len(self._buffer) > _MAX_DIGITS or not self._buffer.isdigit():
                    raise NetstringError("netstring length prefix is not a number")
                return out
            digits = bytes(self._buffer[:colon])
            if not digits.isdigit() or (len(digits) > 1 and digits.startswith(b"0")):
                raise NetstringError("netstring length prefix is not a number")
            length = int(digits)
            if length > MAX_NETSTRING:
                raise NetstringError(f"netstring longer than {MAX_NETSTRING} bytes")
            end = colon + 1 + length
            if len(self._buffer) < end + 1:
                return out
            if self._buffer[end : end + 1] != b",":
                raise NetstringError("netstring does not end in a comma")
            out.append(bytes(self._buffer[colon + 1 : end]))
            del self._buffer[: end + 1]
        return out
