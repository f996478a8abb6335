"""The Sendmail milter protocol (version 6), as Postfix speaks it, sans I/O.

Postfix MILTER_README and Sendmail's libmilter/mfdef.h define it: every packet is a 4-byte
big-endian length, a one-byte command and its data; strings are NUL-terminated. Only what the
Authentication-Results milter needs is modelled; unknown commands are answered CONTINUE by the
session, as libmilter does for steps a filter did not register.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAX_PACKET = 1 << 20  # Postfix sends body chunks of at most 64 KiB; headers are far smaller

# Commands from the MTA (mfdef.h SMFIC_*).
ABORT, BODY, CONNECT, MACRO, BODYEOB, HELO, QUIT_NC, HEADER, MAIL, EOH, OPTNEG, QUIT, RCPT, DATA, UNKNOWN = (
    b"A", b"B", b"C", b"D", b"E", b"H", b"K", b"L", b"M", b"N", b"O", b"Q", b"R", b"T", b"U"
)
# Replies to the MTA (SMFIR_*).
CONTINUE, ACCEPT, CHGHEADER, INSHEADER, TEMPFAIL, REPLYCODE = b"c", b"a", b"m", b"i", b"t", b"y"

VERSION = 6
ACTION_ADDHDRS, ACTION_CHGHDRS = 0x01, 0x10
#: SMFIP_NOCONNECT | SMFIP_NOHELO: the steps carrying the client address and HELO name an SPF check needs.
CLIENT_STEPS = 0x01 | 0x02
# Steps we do not need: tell the MTA not to send them (SMFIP_NOCONNECT, NOHELO, NOBODY, NOUNKNOWN, NODATA).
PROTOCOL_SKIP = CLIENT_STEPS | 0x10 | 0x100 | 0x200


class MilterProtocolError(ValueError):
    """Not the milter protocol; the connection is closed (Postfix then applies milter_default_action)."""


@dataclass(frozen=True, slots=True)
class Packet:
    command: bytes
    data: bytes

    def strings(self) -> list[str]:
        """The NUL-terminated strings of the data, decoded leniently (headers may be 8-bit)."""
        parts = self.data.split(b"\0")
        if parts and parts[-1] == b"":
            parts.pop()
        return [p.decode("utf-8", "surrogateescape") for p in parts]


@dataclass
class MilterParser:
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[Packet]:
        self._buffer += data
        packets: list[Packet] = []
        while len(self._buffer) >= 4:
            (length,) = struct.unpack(">I", self._buffer[:4])
            if length < 1 or length > MAX_PACKET:
                raise MilterProtocolError(f"milter packet length {length} out of range")
            if len(self._buffer) < 4 + length:
                break
            packets.append(Packet(bytes(self._buffer[4:5]), bytes(self._buffer[5 : 4 + length])))
            del self._buffer[: 4 + length]
        return packets


def encode(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + command + data


def _cstring(text: str) -> bytes:
    return text.replace("\0", "").encode("utf-8", "surrogateescape") + b"\0"


def optneg_reply(mta_data: bytes, skip: int = PROTOCOL_SKIP) -> bytes:
    """Agree on version 6, ask to add and change headers, and skip the steps in `skip` (SMFIP_NO*).

    The MTA then never sends a skipped step (Postfix milter8.c, milter8_event()).
    """
    if len(mta_data) < 12:
        raise MilterProtocolError("short option negotiation")
    _version, mta_actions, mta_protocol = struct.unpack(">III", mta_data[:12])
    actions = (ACTION_ADDHDRS | ACTION_CHGHDRS) & mta_actions
    return encode(OPTNEG, struct.pack(">III", VERSION, actions, skip & mta_protocol))


def change_header(index: int, name: str, value: str) -> bytes:
    """Replace the index-th (1-based) header called `name`; an empty value deletes it."""
    return encode(CHGHEADER, struct.pack(">I", index) + _cstring(name) + _cstring(value))


def insert_header(index: int, name: str, value: str) -> bytes:
    """Insert a header at position `index` (0: before all others, where a trace header belongs)."""
    return encode(INSHEADER, struct.pack(">I", index) + _cstring(name) + _cstring(value))


def reply_code(text: str) -> bytes:
    return encode(REPLYCODE, _cstring(text.replace("\r", " ").replace("\n", " ")))
