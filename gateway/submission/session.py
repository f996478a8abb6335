"""aiosmtpd's protocol engine, adjusted for a submission proxy (RFC 6409, RFC 4954, RFC 3207).

aiosmtpd parses commands and runs STARTTLS; the policy lives in `proxy.SubmissionHandler` (STYLE,
aiosmtpd). What aiosmtpd 1.4 does not do as a submission proxy must is done here:

  - AUTH only inside TLS, or from loopback if `allow_auth_without_tls_on_loopback`; else `530 5.7.0
    Must issue a STARTTLS command first` (RFC 3207 section 4), and EHLO lists AUTH only when it may
    be used. Not inside a mail transaction (RFC 4954 section 4: 503). PLAIN and LOGIN check through
    the asynchronous `Authenticator` and the throttle (aiosmtpd's call a synchronous callback);
  - MAIL and RCPT keep their parameters' case and accept the DSN ones (`esmtp`);
  - DATA is read in chunks (`receive_data`) by `content.DataReceiver` (smuggling, line length);
    aiosmtpd's line-by-line loop is not used;
  - the idle timer answers `421 4.4.2` before closing (RFC 5321 section 3.8: a server SHOULD say
    why) and is paused while the upstream is being waited for, which is not the client's idleness.
    aiosmtpd restarts it at each command, not at each read, so it is a deadline for the next
    command line or AUTH response, however slowly its bytes trickle in; during DATA it follows
    `limits.DataDeadline` instead, so a message must average `data_min_rate` octets per second;
  - every command counts against `max_commands`: then `421 4.7.0` and close.

This reaches into aiosmtpd's protected attributes (`_smtp_methods`, `_reset_timeout`, `_reader`,
`_timeout_handle`, `_tls_protocol`), unchanged through the 1.4 releases; the tests cover each use.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from base64 import b64decode
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope

from ..eventloop import open_for_writing
from .content import END_OF_DATA, DataError, DataReceiver
from .esmtp import ParamError, parse_mail, parse_rcpt
from .limits import DataDeadline

if TYPE_CHECKING:
    from .proxy import SubmissionHandler
    from .transaction import Transaction

log = logging.getLogger("antiforgery.submission")

#: Control characters a command line must not hold (its CR LF is gone by now); TAB is white space.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

#: `<local@domain>` and what follows, when both parts are plain dot-atoms (RFC 5322 section 3.2.3)
#: and nothing after them needs a parser: what aiosmtpd's `_getaddr` would return (see `_plain_path`).
_PLAIN_PATH = re.compile(
    r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>((?:[ \t][ -'*-~\t]*)?)"
)

#: RFC 5321 section 4.5.3.1.4 gives 512 octets; RFC 1870, 3461, 6531 add room for their parameters.
COMMAND_LIMITS = {"MAIL": 512 + 26 + 10 + 110 + 14, "RCPT": 512 + 500 + 30}


def _plain_path(text: str) -> tuple[str, str] | None:
    """(address, parameters) of a MAIL or RCPT argument of the everyday form, as aiosmtpd's `_getaddr`
    gives them; None for anything else (quotes, comments, an address literal, UTF-8, `<>`), which
    is left to `_getaddr`. Its parser (email's `_header_value_parser`, and a class defined at
    every call) cost more than anything else in a MAIL or RCPT command (issue 7)."""
    match = _PLAIN_PATH.fullmatch(text)
    return (match[1], match[2].lstrip(" \t")) if match else None


class SubmissionEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.transaction: Transaction | None = None


class SubmissionSMTP(SMTP):
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

    # -- connection -----------------------------------------------------------------------

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

    # -- state ----------------------------------------------------------------------------

    @property
    def auth_allowed(self) -> bool:
        if self._tls_protocol is not None:
            return True
        if not self.handler.allow_auth_without_tls_on_loopback:
            return False
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(self.client.split("%", 1)[0]).is_loopback
        return False

    @property
    def login(self) -> str | None:
        data: Any = self.session.auth_data if self.session and self.session.authenticated else None
        return data if isinstance(data, str) else None

    # -- AUTH (RFC 4954) --------------------------------------------------------------------

    async def smtp_AUTH(self, arg: str) -> None:
        if not self.auth_allowed:
            await self.push("530 5.7.0 Must issue a STARTTLS command first")
            return
        if self.envelope is not None and self.envelope.mail_from is not None:
            await self.push("503 5.5.1 AUTH is not allowed during a mail transaction")
            return
        locked = self.handler.throttle_locked(self.client)
        if locked:
            await self.push(f"454 4.7.0 Too many failed logins from {self.client}; try again in {int(locked) + 1}s")
            return
        await super().smtp_AUTH(arg)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        response = await self._auth_response(args, "")
        if response is None:
            return AuthResult(success=False, handled=True)
        parts = response.split(b"\x00")
        if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):  # RFC 4616; no acting for others
            await self.push("501 5.5.2 Cannot decode the PLAIN response")
            return AuthResult(success=False, handled=True)
        return await self._check(parts[1], parts[2])

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        login = await self._auth_response(args, "Username:")
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self._auth_response([args[0]], "Password:")
        if password is None:
            return AuthResult(success=False, handled=True)
        return await self._check(login, password)

    async def _auth_response(self, args: list[str], challenge: str) -> bytes | None:
        """The initial response if given (RFC 4954 section 4), else the answer to a 334 challenge."""
        if len(args) > 1:
            try:
                return b64decode(args[1].encode("ascii"), validate=True) if args[1] != "=" else b""
            except ValueError:
                await self.push("501 5.5.2 Cannot decode base64")
                return None
        answer = await self.challenge_auth(challenge)
        return answer if isinstance(answer, bytes) else None  # challenge_auth already answered "*"

    async def _check(self, login: bytes, password: bytes) -> AuthResult:
        try:
            username, secret = login.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            username, secret = "", ""
        async with self.busy():
            reply, canonical = await self.handler.authenticate(self.client, username, secret)
        if canonical is not None:
            return AuthResult(success=True, auth_data=canonical)
        if reply is not None:
            await self.push(reply)
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535 5.7.8

    # -- the mail transaction -------------------------------------------------------------

    async def _transaction_ready(self, command: str) -> bool:
        if await self.check_helo_needed("EHLO"):
            return False
        if self.login is None:
            await self.push("530 5.7.0 Authentication required")
            return False
        if command != "MAIL" and (self.envelope is None or self.envelope.mail_from is None):
            await self.push("503 5.5.1 Need MAIL command first")
            return False
        return True

    def _address(self, keyword: str, arg: str | None, bad_syntax: str) -> tuple[str, list[str]]:
        """The address and the parameters; ParamError `501 5.5.4` without the keyword, `bad_syntax`
        for an address that does not parse or a command with control characters in it (a bare CR,
        which aiosmtpd's parser would take for white space and drop)."""
        stripped = self._strip_command_keyword(keyword, arg or "")
        if not stripped:
            raise ParamError(
                f"501 5.5.4 Syntax: {'MAIL FROM' if keyword == 'FROM:' else 'RCPT TO'}:<address> [parameters]"
            )
        if _CONTROL.search(stripped):
            raise ParamError(f"{bad_syntax}: the command contains control characters")
        plain = None if self.local_part_limit else _plain_path(stripped)
        address, rest = plain or self._getaddr(stripped)
        if address is None:
            raise ParamError(f"{bad_syntax}: {stripped.split()[0][:100]!r} is not an address")
        return address, (rest or "").split()

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not await self._transaction_ready("MAIL"):
            return
        assert self.envelope is not None and self.session is not None
        try:
            if self.envelope.mail_from is not None:
                raise ParamError("503 5.5.1 Nested MAIL command")
            address, words = self._address("FROM:", arg, "501 5.1.7 Bad sender address syntax")
            params = parse_mail(words, self.handler.limits.max_message_size)
            if not (address.isascii() or params.smtputf8):
                raise ParamError("553 5.6.7 Non-ASCII sender requires SMTPUTF8")
        except ParamError as exc:
            await self.push(exc.reply)
            return
        self.envelope.smtp_utf8 = params.smtputf8
        await self.push(await self.handler.handle_MAIL(self, self.session, self.envelope, address, params))

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._transaction_ready("RCPT"):
            return
        assert self.envelope is not None and self.session is not None
        try:
            address, words = self._address("TO:", arg, "501 5.1.3 Bad recipient address syntax")
            if not address or address == "<>":
                raise ParamError("501 5.1.3 Bad recipient address syntax: a recipient cannot be empty")
            params = parse_rcpt(words)
            if not (address.isascii() or self.envelope.smtp_utf8):
                raise ParamError("553 5.6.7 Non-ASCII recipient requires SMTPUTF8")
        except ParamError as exc:
            await self.push(exc.reply)
            return
        async with self.busy():
            reply = await self.handler.handle_RCPT(self, self.session, self.envelope, address, params)
        await self.push(reply)

    async def smtp_DATA(self, arg: str | None) -> None:
        if not await self._transaction_ready("DATA"):
            return
        assert self.envelope is not None and self.session is not None
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        if not self.envelope.rcpt_tos:
            await self.push("554 5.5.1 No valid recipients")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        limits = self.handler.limits
        receiver = DataReceiver(limits.max_message_size, limits.max_line_length)
        self.data_deadline = DataDeadline.start(limits.idle_timeout, limits.data_min_rate, self.loop.time())
        self._reset_timeout(limits.idle_timeout)
        try:
            if not await receive_data(self._reader, receiver):
                return  # the client went away mid-message; connection_lost ends the transaction
        finally:
            self.data_deadline = None
        if self.transport is not None and not self.transport.is_closing():
            self._reset_timeout()  # the timer was last armed for the data deadline, maybe about to fire
        refusals = {
            DataError.TOO_BIG: f"552 5.3.4 Message exceeds the limit of {limits.max_message_size} octets",
            DataError.LINE_TOO_LONG: f"500 5.5.2 Line too long: at most {limits.max_line_length} characters per line",
        }
        if receiver.error is not None:
            reply = refusals[receiver.error]
        else:
            self.envelope.content = self.envelope.original_content = receiver.message
            if receiver.bare_line_ends:
                log.info("client=%s bare CR/LF normalised: %d", self.client, receiver.bare_line_ends)
            async with self.busy():
                reply = await self.handler.handle_DATA(self, self.session, self.envelope)
        self.envelope = self._create_envelope()  # aiosmtpd's post-DATA state
        await self.push(reply)


async def receive_data(reader: asyncio.StreamReader, receiver: DataReceiver) -> bool:
    """Feed `receiver` the message data up to its end (True), or until the stream ends (False).

    Chunks, not lines (a line at a time was the largest cost per message, issue 7): each read takes
    what `receiver.lookahead` says cannot pass the end of data, so a command the client sent after
    it stays in `reader` for aiosmtpd's command loop. A chunk longer than the reader's limit comes
    as LimitOverrunError, which says how much can be taken without passing END_OF_DATA.
    """
    while True:
        try:
            if want := receiver.lookahead:
                chunk = await reader.readexactly(want)
            else:
                chunk = await reader.readuntil(END_OF_DATA)
        except asyncio.LimitOverrunError as exc:
            chunk = await reader.read(exc.consumed)
        except asyncio.IncompleteReadError:
            return False
        if receiver.feed(chunk) is not None:
            return True
