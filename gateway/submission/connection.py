"""A submission session's limits and lifetime: the layer of `session.SubmissionSMTP` under the commands.

A submission server is open to anyone who can connect, so before any command is understood the
session must not be able to hold a connection, or our upstream, for ever (`limits` gives each
limit's reply and why):

  - the idle timer answers `421 4.4.2` before closing (RFC 5321 section 3.8: a server SHOULD say
    why) and is paused while the upstream is being waited for, which is not the client's idleness.
    aiosmtpd restarts it at each command, not at each read, so it is a deadline for the next
    command line or AUTH response, however slowly its bytes trickle in; during DATA it follows
    `limits.DataDeadline` instead, so a message must average `data_min_rate` octets per second;
  - a whole session lasts at most `session_seconds`, however busy;
  - every command counts against `max_commands`: then `421 4.7.0` and close.

The envelope's upstream transaction ends with the envelope (RSET, HELO/EHLO, STARTTLS, after DATA,
or a lost connection), so no upstream connection is left inside a transaction the client gave up.

This reaches into aiosmtpd's protected attributes (`_smtp_methods`, `_reset_timeout`,
`_timeout_handle`), unchanged through the 1.4 releases; the tests cover each use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, Envelope

from ..eventloop import open_for_writing
from .limits import DataDeadline

if TYPE_CHECKING:
    from .proxy import SubmissionHandler
    from .transaction import Transaction

log = logging.getLogger("antiforgery.submission")

#: RFC 5321 section 4.5.3.1.4 gives 512 octets; RFC 1870, 3461, 6531 add room for their parameters.
COMMAND_LIMITS = {"MAIL": 512 + 26 + 10 + 110 + 14, "RCPT": 512 + 500 + 30}


class SubmissionEnvelope(Envelope):
    """aiosmtpd's envelope, with the upstream transaction that relays it (set at MAIL FROM)."""

    def __init__(self) -> None:
        super().__init__()
        self.transaction: Transaction | None = None


class SubmissionConnection(SMTP):
    """aiosmtpd's engine with our timers, command count and envelope lifetime; no command of its own."""

    def __init__(self, handler: SubmissionHandler, loop: asyncio.AbstractEventLoop) -> None:
        limits = handler.limits
        super().__init__(
            handler,
            hostname=handler.hostname,
            ident="ESMTP submission",
            tls_context=handler.tls_context,
            data_size_limit=limits.max_message_size,  # advertised as SIZE (RFC 1870)
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=limits.idle_timeout,
            auth_require_tls=False,  # enforced in smtp_AUTH, with the loopback exemption
            loop=loop,
        )
        self.handler = handler
        self.client = "unknown"
        self.commands = 0
        self.data_deadline: DataDeadline | None = None  # set while the message data is being read
        self.session_limit: asyncio.TimerHandle | None = None
        self.relaying = False  # waiting for the upstream (see busy)
        self.expired = False  # the session limit passed while relaying
        self.command_size_limits = defaultdict(lambda: SMTP.command_size_limit, COMMAND_LIMITS)
        self._smtp_methods = {name: self._counted(method) for name, method in self._smtp_methods.items()}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # the first call; a second one comes after STARTTLS
            peer: Any = transport.get_extra_info("peername")
            self.client = str(peer[0]) if peer else "unknown"
            self.session_limit = self.loop.call_later(self.handler.limits.session_seconds, self._session_too_long)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.session_limit is not None:
            self.session_limit.cancel()
        self._close_transaction(self.envelope)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        """Message data buys time as it arrives, but only as much as it is worth (limits.DataDeadline),
        however long the reads wait for a whole chunk. The deadline only moves forward, so the timer
        is re-armed when it fires, not at each arrival."""
        if self.data_deadline is not None:
            self.data_deadline.received(len(data), self.loop.time())
        super().data_received(data)

    def _session_too_long(self) -> None:
        """421 and close, whatever the client is doing, except while we wait for the upstream's
        answer to a message (closing then could leave it delivered but unanswered, and sent twice):
        then as soon as that answer is passed on. A message the client was still sending is not
        relayed; the client sends it again on a new connection."""
        if self.relaying:
            self.expired = True  # busy() calls again once the upstream's answer is on its way
            return
        log.info("client=%s session longer than %gs; closing", self.client, self.handler.limits.session_seconds)
        if (transport := open_for_writing(self.transport)) is not None:
            transport.write(f"421 4.4.2 {self.hostname} Session too long; closing connection\r\n".encode())
        if self.transport is not None:
            self.transport.close()

    def _create_envelope(self) -> Envelope:
        """A new envelope at RSET, HELO/EHLO, STARTTLS and after DATA: the old transaction ends."""
        self._close_transaction(self.envelope)
        return SubmissionEnvelope()

    def _close_transaction(self, envelope: Envelope | None) -> None:
        if isinstance(envelope, SubmissionEnvelope) and envelope.transaction is not None:
            if envelope.transaction.open:  # after a relayed message there is nothing left to end
                self.handler.background(envelope.transaction.abort())
            envelope.transaction = None

    def _timeout_cb(self) -> None:
        if self.data_deadline is not None and (left := self.data_deadline.at - self.loop.time()) > 0:
            self._reset_timeout(left)  # data arrived since the timer was set: the deadline moved on
            return
        if (transport := open_for_writing(self.transport)) is not None:
            limits = self.handler.limits
            if self.data_deadline is not None:
                log.info(
                    "client=%s sent message data slower than %d octets/s; closing", self.client, limits.data_min_rate
                )
                reply = f"421 4.4.2 {self.hostname} Message data too slow; closing connection"
            else:
                log.info("client=%s sent no complete command within %gs; closing", self.client, limits.idle_timeout)
                reply = f"421 4.4.2 {self.hostname} Idle timeout; closing connection"
            transport.write(f"{reply}\r\n".encode("ascii"))
        if self.transport is not None:
            self.transport.close()  # as aiosmtpd's own callback: connection_lost cleans up

    @contextlib.asynccontextmanager
    async def busy(self) -> AsyncIterator[None]:
        """Pause the idle timer while we, not the client, are the slow side (waiting on the upstream)."""
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self.relaying = True
        try:
            yield
        finally:
            self.relaying = False
            if self.expired:
                self.loop.call_soon(self._session_too_long)  # after the reply now being pushed
            if self.transport is not None:
                self._reset_timeout()

    def _counted(self, method: Callable[[str | None], Awaitable[None]]) -> Callable[[str | None], Awaitable[None]]:
        async def counted(arg: str | None) -> None:
            self.commands += 1
            if self.commands > self.handler.limits.max_commands:
                log.info("client=%s sent more than %d commands; closing", self.client, self.commands - 1)
                await self.push("421 4.7.0 Too many commands in one session; closing connection")
                if self.transport is not None:
                    self.transport.close()
                return
            await method(arg)

        return counted
