"""A Postfix milter that replaces foreign Authentication-Results of ours with our own verdict.

    smtpd_milters = inet:127.0.0.1:10043
    milter_default_action = accept     # our header is advice; never hold mail for it

RFC 8601 section 5: a border MTA must remove Authentication-Results headers that claim its own
authserv-id before adding its own, or anyone could forge our verdict. Postfix header_checks
cannot do this: they also remove the header a policy service PREPENDs (tested against real
Postfix), so the removal and the insertion happen together here, at end of message, as
OpenDKIM and OpenDMARC do. Verification (reject/warn) stays with the policy service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field

from . import authresults
from . import milter_protocol as mp
from .authresults import SpfCheck
from .exchange import CloseConnection, Exchanges
from .service import VerificationService

HEADER = "Authentication-Results"


@dataclass
class _Message:
    sender: str = ""
    #: Only the first recipient and the count are kept: the verdict needs no more (a bounce's
    #: recipient is checked when it is the only one), and a client could send RCPTs without end.
    recipient: str = ""
    recipients: int = 0
    seen: int = 0  # Authentication-Results headers so far (milter header indexes are 1-based)
    foreign: list[int] = field(default_factory=list)


class MilterSession:
    def __init__(self, service: VerificationService, authserv_id: str, spf_check: SpfCheck | None = None) -> None:
        self.service = service
        self.authserv_id = authserv_id
        self.spf_check = spf_check
        self.client_address: str | None = None
        self.helo = ""
        self.message = _Message()
        self.parser = mp.MilterParser()

    def handle(self, packet: mp.Packet) -> list[bytes]:
        """Replies for one packet; [] where the protocol wants none (macros, abort)."""
        command, args = packet.command, packet.strings()
        if command == mp.OPTNEG:
            # Without CONNECT and HELO there is no client address to check SPF for.
            skip = mp.PROTOCOL_SKIP if self.spf_check is None else mp.PROTOCOL_SKIP & ~mp.CLIENT_STEPS
            return [mp.optneg_reply(packet.data, skip)]
        if command in (mp.MACRO, mp.ABORT, mp.QUIT_NC):
            if command != mp.MACRO:
                self.message = _Message()
            return []
        if command == mp.CONNECT:
            self.client_address = _connect_address(packet.data)
        elif command == mp.HELO and args:
            self.helo = args[0]
        elif command == mp.MAIL and args:
            self.message = _Message(sender=_bare(args[0]))
        elif command == mp.RCPT and args:
            self.message.recipients += 1
            if self.message.recipients == 1:
                self.message.recipient = _bare(args[0])
        elif command == mp.HEADER and len(args) >= 1 and args[0].lower() == HEADER.lower():
            self.message.seen += 1
            value = args[1] if len(args) > 1 else ""
            if authresults.is_ours(f"{HEADER}:{value}", self.authserv_id):
                self.message.foreign.append(self.message.seen)
        elif command == mp.BODYEOB:
            replies = self._end_of_message(None)
            self.message = _Message()
            return replies
        return [mp.encode(mp.CONTINUE)]

    async def _end_of_message_with_spf(self) -> bytes:
        """pyspf asks DNS synchronously, for seconds when the sender's domain wants it so: in a
        thread, so that the event loop every adapter shares goes on answering meanwhile. Nothing
        else of this connection is read until the reply is out (callout.exchange)."""
        assert self.spf_check is not None and self.client_address is not None
        spf = await asyncio.to_thread(self.spf_check, self.client_address, self.message.sender, self.helo)
        replies = self._end_of_message(spf)
        self.message = _Message()
        return b"".join(replies)

    def _end_of_message(self, spf: str | None) -> list[bytes]:
        message = self.message
        recipient = message.recipient if message.recipients == 1 else ""
        request = self.service.request(message.sender, recipient, self.client_address, "END-OF-MESSAGE")
        decision = self.service.decide(request, "milter", record=False)  # the policy service recorded it
        value = authresults.header_value(self.authserv_id, decision, spf, message.sender)
        # Delete from the last to the first, so that earlier indexes stay valid.
        replies = [mp.change_header(index, HEADER, "") for index in reversed(message.foreign)]
        replies.append(mp.insert_header(0, HEADER, value))  # Postfix adds the space after the colon
        replies.append(mp.encode(mp.CONTINUE))
        return replies

    def respond(self, packet: mp.Packet) -> bytes | Awaitable[bytes]:
        """The replies to one packet; awaitable only at end of message with an SPF check to make."""
        if packet.command == mp.QUIT:
            raise CloseConnection
        if packet.command == mp.BODYEOB and self.spf_check is not None and self.client_address:
            return self._end_of_message_with_spf()
        try:
            return b"".join(self.handle(packet))
        except mp.MilterProtocolError:
            raise CloseConnection from None

    def feed(self, data: bytes) -> list[mp.Packet]:
        return self.parser.feed(data)

    def finish(self) -> list[mp.Packet]:
        return []


def _connect_address(data: bytes) -> str | None:
    """SMFIC_CONNECT data: hostname NUL, family ('4', '6', 'L', 'U'), port (2 bytes), address NUL."""
    _hostname, _, rest = data.partition(b"\0")
    if rest[:1] not in (b"4", b"6") or len(rest) < 4:
        return None
    return rest[3:].partition(b"\0")[0].decode("ascii", "replace") or None


def _bare(address: str) -> str:
    return address.strip().removeprefix("<").removesuffix(">")


def session_factory(service: VerificationService, authserv_id: str, spf_check: SpfCheck | None = None) -> Exchanges:
    return lambda: MilterSession(service, authserv_id, spf_check)
