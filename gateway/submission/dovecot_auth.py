"""Checking SMTP AUTH credentials against Dovecot, as Postfix's `smtpd_sasl_type = dovecot` does.

Sites whose users already log in to IMAP through Dovecot keep one password database: the gateway
asks Dovecot's auth service over its client socket (`service auth { unix_listener auth-client }`
or an `inet_listener`), speaking the Dovecot authentication protocol, client side
(doc.dovecot.org, "Dovecot Authentication Protocol", v1.x; Dovecot 2.3 speaks 1.2):

    C: VERSION <TAB> 1 <TAB> 2          S: VERSION <TAB> 1 <TAB> 2
    C: CPID <TAB> <pid>                 S: MECH <TAB> PLAIN <TAB> plaintext   (one per mechanism)
                                        S: SPID / CUID / COOKIE ...  then  S: DONE
    C: AUTH <TAB> 1 <TAB> PLAIN <TAB> service=smtp <TAB> nologin <TAB> secured <TAB> rip=<ip>
          <TAB> resp=<base64 of "\\0login\\0password" (RFC 4616)>
    S: OK <TAB> 1 <TAB> user=<login>  |  FAIL <TAB> 1 [<TAB> temp | code=temp_fail] ...  |  CONT ...

Lines end in LF, fields are split by TAB and values use Dovecot's tab-escaping (\\001 then one of
0 1 t r n l). `secured` is sent because the proxy offers AUTH only over TLS or loopback (design
invariant 7); `rip` lets Dovecot's auth penalty slow down guessing from one client. A FAIL flagged
`temp` (protocol <= 1.1) or `code=temp_fail` (1.2) is Dovecot's own backend failing: unavailable,
not a wrong password. So is a refused connection, a timeout or a reply we cannot parse.

`DovecotClient` is the protocol without I/O (bytes in, events out, tested without a socket);
`DovecotAuthenticator` runs it over one short connection per attempt.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from dataclasses import dataclass, field

from ..config import parse_socket
from .auth import AuthOutcome, AuthResult

log = logging.getLogger("antiforgery.auth.dovecot")

MAJOR_VERSION = 1
MINOR_VERSION = 2
MAX_LINE = 16384  # the protocol document's expected maximum
REQUEST_ID = "1"  # one request per connection
_UNESCAPE = {"0": "\0", "1": "\x01", "t": "\t", "r": "\r", "n": "\n", "l": "\n"}


class DovecotProtocolError(ValueError):
    """The auth server sent something this client cannot accept; the message says what."""


def escape(value: str) -> str:
    """Dovecot's tab-escaping of one field value."""
    return (
        value.replace("\x01", "\x011").replace("\0", "\x010").replace("\t", "\x01t")
        .replace("\r", "\x01r").replace("\n", "\x01n")
    )


def unescape(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for ch in chars:
        if ch == "\x01":
            nxt = next(chars, "")
            out.append(_UNESCAPE.get(nxt, nxt))
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Line:
    """One server line: the command, its positional fields and its `name[=value]` options."""

    command: str
    args: tuple[str, ...]
    options: dict[str, str] = field(default_factory=dict)


def parse_line(raw: bytes) -> Line:
    """One line without its LF. Options are the fields after the command's fixed ones."""
    if len(raw) > MAX_LINE:
        raise DovecotProtocolError(f"line longer than {MAX_LINE} octets")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DovecotProtocolError("line is not UTF-8") from None
    command, *fields = text.split("\t")
    if not command or not command.isascii() or not command.isupper():
        raise DovecotProtocolError(f"malformed command {command[:20]!r}")
    fixed = {"OK": 1, "FAIL": 1, "CONT": 2, "VERSION": 2, "MECH": 1}.get(command, len(fields))
    if len(fields) < fixed:
        raise DovecotProtocolError(f"{command} needs {fixed} field(s), got {len(fields)}")
    options: dict[str, str] = {}
    for item in fields[fixed:]:
        name, _, value = item.partition("=")
        options[name] = unescape(value)
    return Line(command, tuple(unescape(f) for f in fields[:fixed]), options)


def plain_response(username: str, password: str) -> str:
    """RFC 4616 PLAIN: empty authorization identity, then authentication identity and password."""
    return base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to our AUTH: `user` is Dovecot's canonical name on OK."""

    outcome: AuthOutcome
    user: str | None = None
    reason: str = ""


@dataclass
class DovecotClient:
    """The client side of one connection, sans I/O: `handshake()` and `auth()` give the bytes to
    send, `feed()` takes what arrived and returns the reply once it is complete."""

    ready: bool = False  # the server's handshake ended with DONE and offered PLAIN
    mechanisms: set[str] = field(default_factory=set)
    _buffer: bytearray = field(default_factory=bytearray)
    _sent_auth: bool = False

    @staticmethod
    def handshake(pid: int) -> bytes:
        return f"VERSION\t{MAJOR_VERSION}\t{MINOR_VERSION}\nCPID\t{pid}\n".encode()

    def auth(self, username: str, password: str, client_address: str | None, service: str = "smtp") -> bytes:
        if not self.ready:
            raise DovecotProtocolError("AUTH before the server's handshake was complete")
        self._sent_auth = True
        fields = ["AUTH", REQUEST_ID, "PLAIN", f"service={escape(service)}", "nologin", "secured"]
        if client_address:
            fields.append(f"rip={escape(client_address)}")
        fields.append(f"resp={plain_response(username, password)}")
        return ("\t".join(fields) + "\n").encode()

    def feed(self, data: bytes) -> Reply | None:
        """Process received bytes; the reply to our AUTH once it arrived, else None."""
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            reply = self._line(parse_line(raw))
            if reply is not None:
                return reply
        if len(self._buffer) > MAX_LINE:
            raise DovecotProtocolError(f"line longer than {MAX_LINE} octets")
        return None

    def _line(self, line: Line) -> Reply | None:
        if line.command == "VERSION":
            if line.args[0] != str(MAJOR_VERSION):
                raise DovecotProtocolError(f"server speaks protocol version {line.args[0]}, we speak {MAJOR_VERSION}")
        elif line.command == "MECH":
            self.mechanisms.add(line.args[0].upper())
        elif line.command == "DONE":
            if "PLAIN" not in self.mechanisms:
                raise DovecotProtocolError("the server does not offer PLAIN (auth_mechanisms = plain)")
            self.ready = True
        elif line.command in ("OK", "FAIL", "CONT"):
            if not self._sent_auth or line.args[0] != REQUEST_ID:
                raise DovecotProtocolError(f"{line.command} for a request we did not make")
            return _reply(line)
        # SPID, CUID, COOKIE and commands from later minor versions carry nothing we need.
        return None


def _reply(line: Line) -> Reply:
    if line.command == "OK":
        user = line.options.get("user", "")
        if not user:
            raise DovecotProtocolError("OK without user=")
        return Reply(AuthOutcome.OK, user)
    if line.command == "CONT":  # PLAIN sent with its initial response is never continued
        raise DovecotProtocolError("CONT for PLAIN with an initial response")
    reason = line.options.get("reason", "")
    if "temp" in line.options or line.options.get("code") == "temp_fail":
        return Reply(AuthOutcome.UNAVAILABLE, reason=reason or "temporary failure")
    return Reply(AuthOutcome.BAD_CREDENTIALS, reason=reason)


@dataclass(frozen=True, slots=True)
class SocketAddress:
    """Where the auth service listens: a unix socket path, or a loopback host and port."""

    path: str | None = None
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, value: str) -> SocketAddress:
        """`inet:host:port` (`inet:[::1]:port`), `unix:/path` or an absolute `/path`, as Postfix writes them."""
        parsed = parse_socket(value)
        return cls(path=parsed) if isinstance(parsed, str) else cls(host=parsed[0], port=parsed[1])

    def __str__(self) -> str:
        return self.path or f"inet:{self.host}:{self.port}"


def dovecot_login(user: str, strip_domains: frozenset[str]) -> str:
    """Dovecot's user name as a gateway login: lowercased, and `@domain` dropped for our own domains.

    Only configured domains are stripped: `alice@elsewhere.org`, authenticated by a multi-domain
    Dovecot, is not our `alice`.
    """
    login = user.lower()
    local, at, domain = login.rpartition("@")
    return local if at and local and domain in strip_domains else login


class DovecotAuthenticator:
    """The `Authenticator` protocol (gateway.submission.auth) over Dovecot's auth client socket."""

    def __init__(
        self, address: SocketAddress, *, strip_domains: frozenset[str] = frozenset(), timeout: float = 10.0
    ) -> None:
        self.address = address
        self.strip_domains = frozenset(d.lower() for d in strip_domains)
        self.timeout = timeout

    async def authenticate(self, username: str, password: str, client_address: str | None) -> AuthResult:
        if not username or not password or len(username) > 254 or len(password) > 1024:
            return AuthResult(AuthOutcome.BAD_CREDENTIALS)
        if "\0" in username or "\0" in password:  # would shift PLAIN's fields
            return AuthResult(AuthOutcome.BAD_CREDENTIALS)
        try:
            reply = await asyncio.wait_for(self._ask(username, password, client_address), self.timeout)
        except TimeoutError:
            log.warning("dovecot auth at %s: no answer within %.0f s", self.address, self.timeout)
            return AuthResult(AuthOutcome.UNAVAILABLE)
        except (OSError, EOFError, DovecotProtocolError) as exc:
            log.warning("dovecot auth at %s: %s", self.address, (isinstance(exc, OSError) and exc.strerror) or exc)
            return AuthResult(AuthOutcome.UNAVAILABLE)
        if reply.outcome is AuthOutcome.OK and reply.user:
            return AuthResult(AuthOutcome.OK, dovecot_login(reply.user, self.strip_domains))
        if reply.outcome is AuthOutcome.UNAVAILABLE:
            log.warning("dovecot auth at %s: temporary failure (%s)", self.address, reply.reason)
        return AuthResult(reply.outcome)

    async def _ask(self, username: str, password: str, client_address: str | None) -> Reply:
        if self.address.path is not None:
            reader, writer = await asyncio.open_unix_connection(self.address.path, limit=MAX_LINE * 2)
        else:
            reader, writer = await asyncio.open_connection(self.address.host, self.address.port, limit=MAX_LINE * 2)
        try:
            client = DovecotClient()
            writer.write(client.handshake(os.getpid()))
            sent = False
            while True:
                data = await reader.read(4096)
                if not data:
                    raise EOFError("connection closed before the answer")
                reply = client.feed(data)
                if reply is not None:
                    return reply
                if client.ready and not sent:
                    writer.write(client.auth(username, password, client_address))
                    sent = True
        finally:
            writer.close()
