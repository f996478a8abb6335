"""Call-forward verification of a remote address: ask its mail server by an SMTP callout.

Seed 003, "Standardization": "call-forward verification is useful within an organization (e.g. for
ppsw to be able to verify addresses at departmental and college email servers)". The dialogue is
a mail transaction abandoned before DATA (RFC 5321 section 3.3): EHLO (HELO if EHLO is refused,
section 3.2), `MAIL FROM:<>` (the null reverse-path every server must accept, section 4.5.5),
`RCPT TO:<address>`, QUIT (section 4.1.1.10). The RCPT reply is the answer:

  - POSITIVE: 2xx, the server would take mail for the address;
  - NEGATIVE: 5xx to RCPT (or a null MX, RFC 7505: the domain takes no mail at all);
  - TEMPORARY: 4xx, a timeout, a refused connection, no mail exchanger, a broken dialogue, or a
    server refusing `MAIL FROM:<>`: nothing is known, and nothing may be guessed (invariant 6).

Where to call: a configured route for the domain ("host:port"), else its MX hosts in preference
order (RFC 5321 section 5.1), each tried in turn while connecting to it or its greeting fails. DNS
is passed in as a function (STYLE, the dkimpy model), and so is connecting, so tests use a fake
resolver and servers on loopback only. One deadline covers the lookup and the whole dialogue.
Positive and negative results are cached for their own times; temporary ones never are.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from gateway.config import parse_listen

from .callout_cache import TtlCache

MxResolver = Callable[[str], Awaitable[Sequence[tuple[int, str]]]]
Connector = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]

SMTP_PORT = 25
QUIT_SECONDS = 2.0  # politeness only: the answer is known before QUIT
MAX_REPLY_LINES = 100
_DOMAIN = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*")


class Outcome(enum.Enum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    TEMPORARY = "temporary"


@dataclass(frozen=True, slots=True)
class CalloutResult:
    outcome: Outcome
    #: The server's reply ("550 5.1.1 no such user") or why there is none ("connection refused").
    detail: str
    host: str | None = None
    cached: bool = False


class SmtpReplyError(Exception):
    """The peer's bytes are not an SMTP reply, or the connection ended inside one."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


def parse_reply_line(raw: bytes) -> tuple[int, bool, str]:
    """One reply line (RFC 5321 section 4.2): code, whether more lines follow ("250-"), text.

    Non-printable characters in the text become "?": it ends up in logs and on terminals.
    """
    line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
    code, separator, text = line[:3], line[3:4], line[4:]
    if not (len(code) == 3 and code.isdigit() and code[0] in "2345" and separator in ("", " ", "-")):
        raise SmtpReplyError(f"not an SMTP reply: {line[:80]!r}")
    return int(code), separator == "-", "".join(c if c.isprintable() else "?" for c in text)


def checked_address(address: str) -> str:
    """`local@domain` fit to go into `RCPT TO:<...>`, or ValueError saying what is wrong.

    Refuses what could change the command (spaces, control characters, angle brackets) and what
    RFC 5321 section 4.5.3.1 does not allow (local part over 64 octets, path over 256).
    """
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise ValueError(f"{address!r} is not an address (local@domain)")
    if not address.isascii() or any(c in "<>" or not c.isprintable() or c.isspace() for c in address):
        raise ValueError(f"{address!r} has characters not allowed in an SMTP address")
    if len(local) > 64 or len(address) > 254:
        raise ValueError(f"{address!r} is too long for SMTP (RFC 5321 section 4.5.3.1)")
    if not _DOMAIN.fullmatch(domain):
        raise ValueError(f"{domain!r} is not a domain name")
    return address


def cache_key(address: str) -> str:
    """Domains are case-insensitive; local parts may not be (RFC 5321 section 2.4)."""
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


def parse_routes(entries: Iterable[str]) -> dict[str, tuple[str, int]]:
    """["dept.example.ac.uk=127.0.0.1:2525", ...] to {domain: (host, port)}; ValueError names the bad one."""
    routes = {}
    for entry in entries:
        domain, equals, target = entry.partition("=")
        domain = domain.strip().lower()
        if not equals or not _DOMAIN.fullmatch(domain):
            raise ValueError(f"{entry!r} is not domain=host:port")
        routes[domain] = parse_listen(target.strip())
    return routes


async def dns_mx(domain: str) -> list[tuple[int, str]]:
    """MX records by dnspython: (preference, exchange). No MX: the domain is its own (RFC 5321 section 5.1).

    A failed lookup (no such domain, no answer from the servers) raises, and the caller says TEMPORARY.
    """
    import dns.asyncresolver
    import dns.resolver

    try:
        answer = await dns.asyncresolver.resolve(domain, "MX")
    except dns.resolver.NoAnswer:
        return [(0, domain)]
    return [(record.preference, record.exchange.to_text(omit_final_dot=True)) for record in answer]


def _temporary(detail: str, host: str | None = None) -> CalloutResult:
    return CalloutResult(Outcome.TEMPORARY, detail, host)


class _HostUnusable(Exception):
    """Connecting or the greeting failed: RFC 5321 section 5.1 says try the next host."""


class _Dialogue:
    """Commands and replies on one connection, every read and write bounded by one deadline."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadline: float) -> None:
        self.reader, self.writer, self.deadline = reader, writer, deadline

    async def _within(self, step: Awaitable[bytes | None], limit: float | None = None) -> bytes | None:
        remaining = self.deadline - asyncio.get_running_loop().time()
        return await asyncio.wait_for(step, max(0.0, min(remaining, limit or remaining)))

    async def reply(self, limit: float | None = None) -> Reply:
        texts: list[str] = []
        while len(texts) < MAX_REPLY_LINES:
            try:
                raw = await self._within(self.reader.readline(), limit)
            except ValueError as exc:  # a line longer than the reader's limit
                raise SmtpReplyError(str(exc)) from None
            if not raw or not raw.endswith(b"\n"):
                raise SmtpReplyError("connection closed by the server")
            code, more, text = parse_reply_line(raw)
            texts.append(text)
            if not more:
                return Reply(code, " ".join(t for t in texts if t))
        raise SmtpReplyError(f"reply longer than {MAX_REPLY_LINES} lines")

    async def command(self, line: str, limit: float | None = None) -> Reply:
        self.writer.write(line.encode("ascii") + b"\r\n")
        await self._within(self.writer.drain(), limit)
        return await self.reply(limit)


class CalloutClient:
    def __init__(
        self,
        *,
        helo: str,
        resolver: MxResolver = dns_mx,
        routes: Mapping[str, tuple[str, int]] | None = None,
        timeout: float = 30.0,
        port: int = SMTP_PORT,
        positive_ttl: float = 86400.0,
        negative_ttl: float = 600.0,
        cache: TtlCache[CalloutResult] | None = None,
        connect: Connector = asyncio.open_connection,
    ) -> None:
        self.helo = helo
        self.resolver = resolver
        self.routes = {domain.lower(): target for domain, target in (routes or {}).items()}
        self.timeout = timeout
        self.port = port
        self.ttl = {Outcome.POSITIVE: positive_ttl, Outcome.NEGATIVE: negative_ttl, Outcome.TEMPORARY: 0.0}
        self.cache = cache if cache is not None else TtlCache[CalloutResult]()
        self.connect = connect

    async def verify(self, address: str) -> CalloutResult:
        """Ask the address's mail server about it; ValueError if it is not an address."""
        address = checked_address(address)
        key = cache_key(address)
        if (known := self.cache.get(key)) is not None:
            return replace(known, cached=True)
        result = await self._verify(address)
        self.cache.put(key, result, self.ttl[result.outcome])
        return result

    async def _verify(self, address: str) -> CalloutResult:
        deadline = asyncio.get_running_loop().time() + self.timeout
        domain = address.rpartition("@")[2].lower()
        try:
            hosts = await self._hosts(domain, deadline)
        except TimeoutError:
            return _temporary(f"no MX answer for {domain} within {self.timeout:g} s")
        except Exception as exc:  # the resolver is the outside world: any failure is temporary
            return _temporary(f"MX lookup for {domain} failed: {type(exc).__name__}: {exc}".rstrip(": "))
        if any(host in ("", ".") for host, _ in hosts):
            return CalloutResult(Outcome.NEGATIVE, f"{domain} accepts no mail (null MX, RFC 7505)")
        failures = []
        for host, port in hosts:
            try:
                return await self._ask(host, port, address, deadline)
            except _HostUnusable as exc:
                failures.append(str(exc))
        return _temporary("; ".join(failures) or f"no mail exchanger for {domain}")

    async def _hosts(self, domain: str, deadline: float) -> list[tuple[str, int]]:
        if domain in self.routes:
            return [self.routes[domain]]
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        records = await asyncio.wait_for(self.resolver(domain), remaining)
        return [(host.rstrip(".") or ".", self.port) for _, host in sorted(records, key=lambda r: r[0])]

    async def _ask(self, host: str, port: int, address: str, deadline: float) -> CalloutResult:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        remaining = max(0.0, deadline - asyncio.get_running_loop().time())
        try:
            reader, writer = await asyncio.wait_for(self.connect(host, port), remaining)
        except TimeoutError:
            raise _HostUnusable(f"{where}: no connection within {self.timeout:g} s") from None
        except OSError as exc:
            raise _HostUnusable(f"{where}: cannot connect ({exc.strerror or exc})") from None
        except UnicodeError as exc:  # a host name getaddrinfo cannot encode (IDNA: a label over 63)
            raise _HostUnusable(f"{where}: cannot connect ({exc})") from None
        dialogue = _Dialogue(reader, writer, deadline)
        try:
            try:
                greeting = await dialogue.reply()
            except TimeoutError:
                raise _HostUnusable(f"{where}: no greeting within {self.timeout:g} s") from None
            except (SmtpReplyError, OSError) as exc:
                raise _HostUnusable(f"{where}: no greeting ({exc})") from None
            if greeting.code != 220:
                raise _HostUnusable(f"{where} greeted with {greeting}")
            return await self._transaction(dialogue, where, address)
        except TimeoutError:
            return _temporary(f"{where}: no answer within {self.timeout:g} s", where)
        except (SmtpReplyError, OSError) as exc:
            return _temporary(f"{where}: {exc}", where)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), QUIT_SECONDS)

    async def _transaction(self, dialogue: _Dialogue, where: str, address: str) -> CalloutResult:
        hello = await dialogue.command(f"EHLO {self.helo}")
        if hello.code != 250:
            hello = await dialogue.command(f"HELO {self.helo}")
        if hello.code != 250:
            return _temporary(f"{where} refused HELO: {hello}", where)
        mail = await dialogue.command("MAIL FROM:<>")
        if mail.code // 100 != 2:
            return _temporary(f"{where} refused the null sender (RFC 5321 section 4.5.5 requires it): {mail}", where)
        rcpt = await dialogue.command(f"RCPT TO:<{address}>")
        outcome = {2: Outcome.POSITIVE, 5: Outcome.NEGATIVE}.get(rcpt.code // 100, Outcome.TEMPORARY)
        with contextlib.suppress(Exception):  # the answer is known; a server slow to say goodbye changes nothing
            await dialogue.command("QUIT", QUIT_SECONDS)
        return CalloutResult(outcome, str(rcpt), where)
