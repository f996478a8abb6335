"""SMTP callout responder: remote hosts ask whether an address of ours is genuine (seed 003, "Message relay").

A callout (call-back verification) is an SMTP mail transaction abandoned before DATA (RFC 5321
section 3.3): EHLO, `MAIL FROM:<>`, `RCPT TO:<address>`, QUIT. The seed: "When it is being sent the
envelope of the 'bounce' ppsw will verify it as usual and communicate the result (accept or
reject) back to the site performing the call-back". So MAIL is always accepted and RCPT gets the
decision every other adapter gets for (sender, recipient): with the null sender (or a probe sender
such as Postfix's double-bounce@) the recipient is checked as the recipient of a bounce. So is it
with a bounce-like sender (postmaster@, mailer-daemon@: Exim's `callout=use_postmaster`): the core
records and lets through real bounces from such senders, but no message ever follows a callout
here, so that leniency would only let a forged address pass verification. Postfix with
`address_verify_sender_ttl` appends a time stamp to its probe sender (`double-bounceJQZ3@`, see
`probes.is_probe_sender`): that is a probe too, not a sender to check in place of the recipient.

Exim's `callout=random` first asks for a made-up local part (`probes.is_random_test_address`); if
that is accepted it takes the domain to accept anything and skips the real check. Other unknown
addresses get 250 (not ours to judge), that one `550 5.1.1`, or forgeries would pass such sites.

RCPT replies: 250 for accept and for warn, since testing mode "does not allow third parties to
detect forgery using call-back verification" (seed 003, "Testing mode"); `550 5.7.1 <why>` for
reject; `451 4.3.0 <why>` when the service cannot decide (design invariant 6: never a guess).
No message is ever taken (see `smtp_DATA`). No AUTH, no STARTTLS: nothing here needs them.

Limits, so that callouts are no oracle for who opted in or for trying tags (`ratelimit`):
  - each RCPT takes a token from its client's bucket (IPv4 address or IPv6 /64; configurable rate
    and burst). Without one: `450 4.7.1`, and no decision is made. A 450 on RCPT is RFC 5321
    section 4.2.2's "mailbox unavailable (e.g. temporarily blocked for policy reasons)" for that
    one address: callers (Exim `verify = ...callout`, Postfix `reject_unverified_*`) treat it as
    "cannot verify now" and retry later, which is the honest answer. `421` and close would also
    say nothing, but it tells a caller the whole host is down, and a caller that pipelines
    several callouts in one session would lose all of them for one over-eager burst;
  - at most `max_recipients` RCPTs per session, counted across RSET: `452 4.5.3`, the reply RFC 5321
    section 4.5.3.1.10 requires for a recipient limit;
  - at most `max_sessions` concurrent sessions per client: the greeting is `421 4.7.0` (RFC 5321
    section 3.1: a server may refuse a connection with 421) and the connection is closed;
  - a session lasts at most `session_seconds`, busy or idle: then `421 4.4.2` and close.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from prometheus_client import Counter

from gateway.config import Config, ConfigError
from gateway.eventloop import open_for_writing

from .decision import Action, Decision
from .forward import ForwardCheck, forward_from
from .probes import is_probe_sender, is_random_test_address
from .ratelimit import ClientLimits
from .service import VerificationService

log = logging.getLogger("antiforgery.callout")

ADAPTER = "callout"
REFUSED = Counter("antiforgery_callout_refused", "Callout requests refused by a limit, unanswered", ["limit"])

#: RFC 5321 section 4.5.3.1.5: a reply line is at most 512 octets with its CRLF.
MAX_REPLY_LINE = 510

#: Mail sent here is misrouted. 554 is the permanent failure RFC 5321 section 4.3.2 lists after the
#: data ("transaction failed"), so the sending MTA bounces at once instead of retrying for days, and
#: the misconfiguration surfaces; RFC 3463 X.3.2 is "system not accepting network messages".
REFUSE_DATA = "554 5.3.2 This host only answers address verification callouts; it accepts no messages"
#: DATA when no RCPT was accepted (RFC 5321 section 3.3: 503 or "no valid recipients" 554).
NO_RECIPIENTS = "554 5.5.1 No valid recipients"
NO_SUCH_USER = "550 5.1.1 <{address}>: no such user (the random address of a callout test)"
#: Any fault on our side while answering (RFC 3463 X.3.0: other or undefined mail system status).
TEMPORARY_FAILURE = "451 4.3.0 verification failed on our side; try again later"


@dataclass(frozen=True)
class Limits:
    rate: float = 1.0  # RCPTs per second per client, refilled continuously
    burst: int = 30  # RCPTs a client may send at once before the rate applies
    max_recipients: int = 10  # RCPTs per session
    max_sessions: int = 5  # concurrent sessions per client
    session_seconds: float = 60.0  # wall-clock length of one session


def limits_from(config: Config) -> Limits:
    """The responder's limits from [verification]; ConfigError names a count below 1."""
    v = config.verification
    for name in ("callout_burst", "callout_max_recipients", "callout_max_sessions"):
        if getattr(v, name) < 1:
            raise ConfigError(f"{config.path}: [verification] {name} must be at least 1")
    return Limits(
        v.callout_rate, v.callout_burst, v.callout_max_recipients, v.callout_max_sessions, v.callout_session_seconds
    )


def handler_from(config: Config, service: VerificationService, forward: ForwardCheck | None = None) -> CalloutHandler:
    """The responder `antiforgery serve` starts, with call-forward for `callout_domains` if any;
    pass `forward` to share one callout cache with the other adapters."""
    hostname = config.verification.callout_hostname or None
    forward = forward or forward_from(config, service)
    return CalloutHandler(service, limits_from(config), hostname=hostname, forward=forward)


def _printable_ascii(line: str) -> str:
    """RFC 5321 replies are ASCII (aiosmtpd without SMTPUTF8 cannot even send more) and a CR or LF
    may only end them (section 2.3.8): anything else, such as a departmental server's localised
    text or a control character in the address asked about, becomes "?"."""
    return "".join(c if " " <= c <= "~" else "?" for c in line)


def reply_for(decision: Decision, address: str) -> str:
    """The RCPT reply for a decision: 250 unless it rejects (5xx) or defers (4xx)."""
    if decision.action is Action.REJECT:
        code = decision.code if 500 <= decision.code < 600 else 550
        line = f"{code} {decision.enhanced} {decision.text}"
    elif decision.action is Action.DEFER:
        code = decision.code if 400 <= decision.code < 500 else 451
        line = f"{code} {decision.enhanced} {decision.text}"
    else:  # ACCEPT, and WARN: testing mode never refuses a callout
        line = f"250 2.1.5 <{address}> OK"
    return _printable_ascii(line[:MAX_REPLY_LINE])


class CalloutSession(Session):
    """aiosmtpd's session, with what the limits count per connection."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.client = "unknown"
        self.recipients = 0
        self.throttled = False


class CalloutHandler:
    """The policy: aiosmtpd calls `handle_MAIL`, `handle_RCPT`, `handle_DATA` (STYLE, aiosmtpd)."""

    def __init__(
        self,
        service: VerificationService,
        limits: Limits | None = None,
        *,
        hostname: str | None = None,
        forward: ForwardCheck | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self.limits = limits or Limits()
        self.hostname = hostname or socket.getfqdn()
        self.forward = forward
        self.clock = clock
        self.clients = ClientLimits(self.limits.rate, self.limits.burst, self.limits.max_sessions)

    # -- connections (called by CalloutSMTP) ----------------------------------------------

    def open_session(self, client: str) -> str | None:
        """None to greet the client, or the 421 reply that refuses the connection."""
        if self.clients.open(client):
            return None
        REFUSED.labels("sessions").inc()
        log.info("callout refused: client=%s has %d sessions open", client, self.clients.sessions(client))
        return f"421 4.7.0 {self.hostname} Too many connections from {client}; try again later"

    def close_session(self, client: str) -> None:
        self.clients.close(client)

    # -- SMTP commands --------------------------------------------------------------------

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        envelope.mail_from = address  # "<>" for the null sender, as aiosmtpd parses it
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        assert isinstance(session, CalloutSession)
        if address == "<>":
            return "501 5.1.3 The null address is not a recipient"
        session.recipients += 1
        if session.recipients > self.limits.max_recipients:
            return self._refuse(session, "recipients", "452 4.5.3 Too many recipients in this session")
        if not self.clients.allow(session.client, self.clock()):
            reply = f"450 4.7.1 Too many verification requests from {session.client}; try again later"
            return self._refuse(session, "rate", reply)
        if is_random_test_address(address.rpartition("@")[0].lower()):
            return _printable_ascii(NO_SUCH_USER.format(address=address)[:MAX_REPLY_LINE])
        sender = "" if envelope.mail_from in (None, "<>") else str(envelope.mail_from)
        local = sender.rpartition("@")[0].lower()
        rules = self.service.rules
        if local in rules.bounce_like_senders or is_probe_sender(local, rules.probe_senders):
            sender = ""  # a verification probe, see the module docstring
        request = self.service.request(sender, address, session.client, "RCPT")
        if self.forward is not None:
            decision = await self.forward.decide(request, ADAPTER)
        else:
            decision = self.service.decide(request, ADAPTER)
        reply = reply_for(decision, address)
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)  # aiosmtpd's record of accepted recipients: DATA reads it
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return REFUSE_DATA

    async def handle_VRFY(self, server: SMTP, session: Session, envelope: Envelope, address: str) -> str:
        return "252 2.5.2 Cannot VRFY; ask by callout: MAIL FROM:<> RCPT TO:<address>"

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's answer to an exception in a command. Without this hook it is `500 Error:
        (<type>) <message>`: a permanent failure for a fault of ours, with our internals in it.
        A fault costs the caller a retry, never a refusal (design invariants 6 and 9)."""
        log.error("callout failed: %s", type(error).__name__, exc_info=error)
        return TEMPORARY_FAILURE

    def _refuse(self, session: CalloutSession, limit: str, reply: str) -> str:
        REFUSED.labels(limit).inc()
        if not session.throttled:  # one log line per session, not one per refused RCPT
            session.throttled = True
            log.info("callout refused: client=%s limit=%s", session.client, limit)
        return reply

    # -- serving --------------------------------------------------------------------------

    def protocol(self) -> CalloutSMTP:
        return CalloutSMTP(self, loop=asyncio.get_running_loop())

    async def listen(self, host: str, port: int) -> asyncio.Server:
        """Serve callouts on this event loop, the service's own (decisions read its snapshot)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self.protocol, host, port, reuse_address=True)
        log.info("callout listening on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
        return server


class CalloutSMTP(SMTP):
    """aiosmtpd's protocol engine with the connection limits, and DATA refused before any 354."""

    def __init__(self, handler: CalloutHandler, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(
            handler,
            hostname=handler.hostname,
            ident="address verification callouts only",
            data_size_limit=None,  # no SIZE in EHLO: no message is taken anyway
            # aiosmtpd's idle timeout closes without a word; the session deadline below answers 421 first.
            timeout=handler.limits.session_seconds + 5.0,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            loop=loop,
        )
        self.handler = handler
        self._client: str | None = None  # set while this connection counts against its client
        self._deadline: asyncio.TimerHandle | None = None

    def _create_session(self) -> Session:
        session = CalloutSession(self.loop)
        session.client = self._client or "unknown"
        return session

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer: Any = transport.get_extra_info("peername")
        client = str(peer[0]) if peer else "unknown"
        refusal = self.handler.open_session(client)
        if refusal is not None:
            if (writable := open_for_writing(transport)) is not None:
                writable.write(refusal.encode("ascii") + b"\r\n")
            transport.close()  # aiosmtpd never sees this connection
            return
        self._client = client
        super().connection_made(transport)
        self._deadline = self.loop.call_later(self.handler.limits.session_seconds, self._session_expired)

    def connection_lost(self, error: Exception | None) -> None:
        if self._client is None:
            return  # refused in connection_made: nothing was started
        self.handler.close_session(self._client)
        self._client = None
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(error)

    def _session_expired(self) -> None:
        if (transport := open_for_writing(self.transport)) is not None:
            REFUSED.labels("session_time").inc()
            transport.write(f"421 4.4.2 {self.hostname} Session time limit reached; closing\r\n".encode("ascii"))
            transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        """354 after an accepted RCPT, then whatever is sent is read, kept nowhere, and refused.

        Postfix probes with `smtp_address_verify_target = data` (for servers that reject only after
        DATA) take the reply to DATA as the verdict and hang up after a 354: refusing DATA itself
        would make every address fail their verification, signed or not. A misrouted message that
        really is sent costs its transfer, bounded by the session's time, and gets `REFUSE_DATA`.
        aiosmtpd's own DATA would keep the whole message in memory.
        """
        if await self.check_helo_needed():
            return
        assert self.session is not None and self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push(NO_RECIPIENTS)
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        await self._discard_message()
        await self.push(await self.handler.handle_DATA(self, self.session, self.envelope))
        self.envelope = self._create_envelope()  # the transaction is over (aiosmtpd's post-DATA state)

    async def _discard_message(self) -> None:
        """Read up to the end-of-data line (RFC 5321 section 4.1.1.4) and keep none of it."""
        at_line_start = True
        while True:
            try:
                line = await self._reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError as overrun:  # a line longer than the reader's buffer
                await self._reader.readexactly(overrun.consumed)
                at_line_start = False
                continue
            if at_line_start and line == b".\r\n":
                return
            at_line_start = True

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("502 5.5.1 AUTH not available: this host only answers verification callouts")
