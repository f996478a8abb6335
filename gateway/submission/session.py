"""aiosmtpd's protocol engine, adjusted for a submission proxy (RFC 6409, RFC 4954, RFC 3207).

aiosmtpd parses commands and runs STARTTLS; the policy lives in `proxy.SubmissionHandler` (STYLE,
aiosmtpd). What aiosmtpd 1.4 does not do as a submission proxy must is done in three layers, each
a subclass of the one before, so each can be read (and audited) on its own:

  - `connection.SubmissionConnection`: the session's limits. The idle timer answers `421 4.4.2`
    before closing and is paused while the upstream is being waited for; during DATA it follows
    `limits.DataDeadline`; a session lasts at most `session_seconds` and `max_commands` commands;
  - `smtp_auth.AuthenticatingConnection`: AUTH only inside TLS, or from loopback if allowed, and
    not inside a mail transaction; PLAIN and LOGIN check through the asynchronous `Authenticator`;
  - `SubmissionSMTP`, here: the mail transaction. MAIL and RCPT keep their parameters' case and
    accept the DSN ones (`esmtp`); MAIL, RCPT and DATA need a login (invariant 7: no open relay);
    DATA is read in chunks (`receive_data`) by `content.DataReceiver` (smuggling, line length);
    aiosmtpd's line-by-line loop is not used.

This reaches into aiosmtpd's protected attributes (`_reader`, `_reset_timeout`, `_getaddr`,
`_strip_command_keyword`), unchanged through the 1.4 releases; the tests cover each use.
"""

from __future__ import annotations

import asyncio
import logging
import re

from .content import END_OF_DATA, DataError, DataReceiver
from .esmtp import ParamError, parse_mail, parse_rcpt
from .limits import DataDeadline
from .smtp_auth import AuthenticatingConnection

log = logging.getLogger("antiforgery.submission")

#: Control characters a command line must not hold (its CR LF is gone by now); TAB is white space.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

#: `<local@domain>` and what follows, when both parts are plain dot-atoms (RFC 5322 section 3.2.3)
#: and nothing after them needs a parser: what aiosmtpd's `_getaddr` would return (see `_plain_path`).
_PLAIN_PATH = re.compile(
    r"<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>((?:[ \t][ -'*-~\t]*)?)"
)


def _plain_path(text: str) -> tuple[str, str] | None:
    """(address, parameters) of a MAIL or RCPT argument of the everyday form, as aiosmtpd's `_getaddr`
    gives them; None for anything else (quotes, comments, an address literal, UTF-8, `<>`), which
    is left to `_getaddr`. Its parser (email's `_header_value_parser`, and a class defined at
    every call) cost more than anything else in a MAIL or RCPT command (issue 7)."""
    match = _PLAIN_PATH.fullmatch(text)
    return (match[1], match[2].lstrip(" \t")) if match else None


class SubmissionSMTP(AuthenticatingConnection):
    """The protocol `proxy.SubmissionHandler.listen` serves: limits, AUTH, and MAIL, RCPT and DATA."""

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
