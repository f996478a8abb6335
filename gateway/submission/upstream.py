"""The SMTP client side of the proxy: connections to the upstream MTA, one transaction at a time.

Before-queue relaying (design invariant 6): the proxy holds the client's session open while it
talks to the upstream, and gives the client the upstream's own replies, so nothing is accepted
that the next hop has not accepted. A small client of our own rather than smtplib or aiosmtplib,
because the proxy needs three things they hide: every reply verbatim (multi-line included) as the
client must see it, a deadline on every step that turns into a 4xx instead of an exception, and
the message's end-of-data held back (`send_data`, then `finish`), so a message can be abandoned
after its octets were sent (RFC 5321 section 3.3: closing without the final dot aborts the
transaction; see `transaction`).

Failures of our own making are replies too (`Reply.local`): cannot connect, `451 4.4.1` (RFC 3463
X.4.1 "no answer from host"); a timeout or a lost connection after connecting, `451 4.4.2` ("bad
connection"). A broken connection is closed and stays broken; so is one the upstream answered
421, which announces that it closes the connection (RFC 5321 section 3.8).

A connection outlives its transaction: `transaction` hands it to `upstream_pool` at a clean
boundary, and the next transaction starts with its MAIL there instead of connecting, reading a
greeting and sending EHLO again, as Postfix's SMTP connection cache does. `reusable` says whether
a connection can be at such a boundary: not broken, not in DATA, no reply outstanding (a command
cut short, or one another task is waiting for), not closed by the upstream.

One thing is retried behind the client's back: the first MAIL FROM on a reused connection that
turns out to be dead (no answer, closed, or 421: the upstream's idle timeout or a restart ended it
while it sat in the pool) is sent once more on a new connection (`transaction`). That is safe
because neither side has been told anything about the transaction: the client's RCPT that opened
it is still waiting for its reply, and the upstream has no message. Nothing else is retried; the
client retries the whole transaction, as it would with any 4xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass, replace

#: The longest reply line we read (RFC 5321 section 4.5.3.1.5 allows 512 with CRLF) and how many lines.
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 100
_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])(?:([ -])(.*))?", re.DOTALL)


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]
    local: bool = False  # made up by us (unreachable, timeout), not said by the upstream

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    def for_client(self) -> str:
        """The reply the proxy's client gets: the upstream's own, except that a 421 becomes a 451.

        421 says that its sender closes the connection (RFC 5321 section 3.8): the upstream closes
        ours to it, but the proxy keeps its client's session, so passing the 421 on would be untrue.
        The text and its enhanced status code stay as the upstream wrote them."""
        return str(replace(self, code=451) if self.code == 421 else self)

    def __str__(self) -> str:
        """The reply as the client gets it: every line, in multi-line form (RFC 5321 section 4.2.1)."""
        lines = self.lines or ("",)
        out = [f"{self.code}-{line}" for line in lines[:-1]] + [f"{self.code} {lines[-1]}".rstrip()]
        return "\r\n".join(out)


def unreachable(what: str) -> Reply:
    return Reply(451, (f"4.4.1 Upstream mail server unreachable ({what}); try again later",), local=True)


def broken(what: str) -> Reply:
    return Reply(451, (f"4.4.2 Upstream mail server {what}; try again later",), local=True)


class Upstream:
    """One SMTP connection to the upstream: `open`, then MAIL, RCPT, DATA, and `close`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.extensions: dict[str, str] = {}
        self.broken: Reply | None = None  # set once the connection can no longer be trusted
        self.in_data = False  # between the 354 and our final dot: only closing can end it now
        self.pending = False  # a command was sent and its reply not read (yet, or ever: cut short)
        self.end_sent = False  # the message went with its final dot (`send_data`): `finish` only reads
        self.opened_at = time.monotonic()

    @classmethod
    async def open(cls, host: str, port: int, helo: str, timeout: float) -> Upstream | Reply:
        """Connect, read the greeting, EHLO (HELO if refused); a failure is the Reply for the client."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, limit=MAX_REPLY_LINE)
        except TimeoutError:
            return unreachable(f"no connection to {host}:{port} within {timeout:g}s")
        except OSError as exc:
            return unreachable(f"{host}:{port}: {exc.strerror or type(exc).__name__}")
        upstream = cls(reader, writer, timeout)
        greeting = await upstream.read_reply()
        if greeting.code != 220:
            await upstream.close()
            return greeting
        ehlo = await upstream.command(f"EHLO {helo}")
        if ehlo.ok:
            upstream.extensions = parse_extensions(ehlo)
        elif ehlo.local or not (helo_reply := await upstream.command(f"HELO {helo}")).ok:
            await upstream.close()
            return ehlo if ehlo.local else helo_reply
        return upstream

    async def read_reply(self, timeout: float | None = None) -> Reply:
        if self.broken is not None:
            return self.broken
        lines: list[str] = []
        codes: set[int] = set()
        try:
            while len(lines) < MAX_REPLY_LINES:
                async with asyncio.timeout(timeout or self.timeout):
                    raw = await self.reader.readuntil(b"\n")
                match = _REPLY_LINE.fullmatch(raw.rstrip(b"\r\n"))
                codes.add(int(match[1]) if match else 0)
                if match is None or len(codes) > 1:
                    return await self._break(broken("sent a malformed reply"))
                lines.append((match[3] or b"").decode("utf-8", "replace").strip())
                if match[2] != b"-":
                    reply = Reply(codes.pop(), tuple(lines))
                    # 421: the upstream is closing the connection (RFC 5321 section 3.8); never reuse it.
                    return await self._break(reply) if reply.code == 421 else reply
        except TimeoutError:
            return await self._break(broken(f"did not answer within {timeout or self.timeout:g}s"))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return await self._break(broken("closed the connection"))
        return await self._break(broken("sent an endless reply"))

    async def command(self, line: str, timeout: float | None = None) -> Reply:
        """Send one command line and read its reply."""
        self.pending = True
        reply = await self._write(_command_line(line)) or await self.read_reply(timeout)
        self.pending = False
        return reply

    async def mail(self, sender: str, args: list[str]) -> Reply:
        return await self.command(_mail(sender, args))

    async def rcpt(self, recipient: str, args: list[str]) -> Reply:
        return await self.command(_rcpt(recipient, args))

    async def mail_rcpt(
        self, sender: str, args: list[str], recipient: str, rcpt_args: list[str]
    ) -> tuple[Reply, Reply | None]:
        """MAIL and a first RCPT: (MAIL's reply, RCPT's reply, or None when MAIL was refused).

        To an upstream that offers PIPELINING (RFC 2920) both go in one write, saving a round trip
        per message, a third of the proxy's waiting for a one-recipient message. RCPT's reply is
        read even after a refused MAIL, so the connection stays in step (a 503 for it is ignored).
        """
        mail, rcpt = _mail(sender, args), _rcpt(recipient, rcpt_args)
        if "PIPELINING" not in self.extensions:
            reply = await self.command(mail)
            return reply, await self.command(rcpt) if reply.ok else None
        both = _command_line(mail) + _command_line(rcpt)
        self.pending = True
        failure = await self._write(both)
        reply = failure or await self.read_reply()
        rcpt_reply = await self.read_reply()  # the broken reply again if MAIL's broke the connection
        self.pending = False
        return reply, rcpt_reply if reply.ok else None

    async def send_data(self, encoded: bytes, *, with_end: bool = False) -> Reply | None:
        """DATA, and the dot-stuffed message without its final `.CRLF` (`finish` sends it); None
        when the upstream is ready. With `with_end` the final dot goes in the same write, for a
        copy that nothing holds back, and `finish` only reads the verdict."""
        if not encoded.endswith(b".\r\n"):
            raise ValueError("the message must be encoded with content.encode_for_data")
        reply = await self.command("DATA")
        if reply.code != 354:
            return reply
        if with_end:
            self.pending = self.end_sent = True  # the verdict is outstanding
            failure = await self._write(encoded)
            if failure is not None:  # the copy is abandoned: its final dot must not follow from the buffer
                self.writer.transport.abort()
            return failure
        self.in_data = True
        return await self._write(encoded[:-3])

    async def finish(self, timeout: float) -> Reply:
        """Send the end-of-data; the upstream's verdict on the message (RFC 5321 section 4.1.1.4)."""
        self.in_data = False
        self.pending = True
        if self.end_sent:
            reply = await self.read_reply(timeout)
        else:
            reply = await self._write(b".\r\n") or await self.read_reply(timeout)
        self.pending = self.end_sent = False
        return reply

    @property
    def reusable(self) -> bool:
        """At a boundary between commands, as far as we can tell without asking the upstream."""
        sound = self.broken is None and not self.in_data and not self.pending
        return sound and not self.reader.at_eof() and not self.writer.is_closing()

    async def reset(self) -> Reply:
        """RSET: the transaction is over, the connection can take the next one (RFC 5321 section 4.1.1.5)."""
        return await self.command("RSET")

    async def close(self) -> None:
        """QUIT politely if the connection is sound, not in DATA (abandoning the message) and not waiting
        for a reply (another task's, or one cut short: QUIT would read it as its own), then close it."""
        if self.broken is None and not self.in_data and not self.pending:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(min(self.timeout, 5.0)):
                    await self.command("QUIT")
        await self.abort()

    async def abort(self) -> None:
        """Close without QUIT: a transaction still in DATA is abandoned (RFC 5321 section 3.3)."""
        self.drop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()

    def drop(self) -> None:
        """Close at once, without QUIT or waiting: for a connection nothing will be sent on again
        (the event loop may be about to stop, and a task to close it politely would never run)."""
        if self.broken is None:
            self.broken = broken("connection closed")
        self.writer.close()

    async def _write(self, data: bytes) -> Reply | None:
        if self.broken is not None:
            return self.broken
        if self.writer.is_closing():  # the upstream reset it (uvloop raises on a write to a closed transport)
            return await self._break(broken("closed the connection"))
        try:
            self.writer.write(data)
            if self.writer.transport.get_write_buffer_size():  # else the write went out whole: drain cannot wait
                async with asyncio.timeout(self.timeout):
                    await self.writer.drain()
            else:
                await self.writer.drain()  # only for the error it may raise
        except TimeoutError:
            return await self._break(broken(f"did not take data within {self.timeout:g}s"))
        except OSError:
            return await self._break(broken("closed the connection"))
        return None

    async def _break(self, reply: Reply) -> Reply:
        self.broken = reply
        self.writer.close()
        return reply


def _mail(sender: str, args: list[str]) -> str:
    return " ".join([f"MAIL FROM:<{sender}>", *args])


def _rcpt(recipient: str, args: list[str]) -> str:
    return " ".join([f"RCPT TO:<{recipient}>", *args])


def _command_line(line: str) -> bytes:
    """The octets of one command; a CR or LF inside would smuggle a second command upstream."""
    if "\r" in line or "\n" in line:
        raise ValueError("a command line cannot contain CR or LF")
    return line.encode("utf-8", "surrogateescape") + b"\r\n"


def parse_extensions(ehlo: Reply) -> dict[str, str]:
    """EHLO keywords (upper case) and their parameters (RFC 5321 section 4.1.1.1)."""
    extensions = {}
    for line in ehlo.lines[1:]:
        keyword, _, params = line.partition(" ")
        if keyword:
            extensions[keyword.upper()] = params
    return extensions
