"""Exim `${readsocket}` adapter: a line protocol, one request line in, one response line out.

Exim's `${readsocket{inet:host:port}{request}{timeout}{eol}{fail}}` connects, writes the request,
shuts down its sending side (unless told `shutdown=no`) and reads until end-of-file; it appends
nothing to the request. So a request ends at a line feed *or* at the end of input, and the server
closes the connection once the client has closed its side and every request is answered. Other
clients may send several requests on one connection and read the answers in order.

Protocol (this module is its definition):

- A request is one line of at most 2048 octets including its end; LF ends it, a CR before the LF
  (or any CR/LF at its end) is stripped, the end of input ends the last one. A longer line is
  answered `error line too long` and the connection is closed. Octets that are not UTF-8 are read
  as U+FFFD. Every line, even an empty one, gets exactly one response line ending in LF.
- Fields are separated by exactly one space. `<>` or an empty field is the null sender; angle
  brackets around an address are ignored. The command is case-insensitive. Addresses may contain
  spaces (RFC 5321 section 4.1.2: a quoted local part): the sender ends at the first space after
  its quoted local part, if any (Exim's `$sender_address` keeps the quotes), and the recipient is
  the rest of the line (Exim's `$local_part@$domain` has none). So no address can make a request
  unreadable, which Exim would take for "no objection".
- `verify <sender> [<recipient>]` decides as the policy adapter does (design invariant 4: the
  sender of a normal message, the recipient of a bounce). Responses:
  `accept`, `reject <code> <enhanced> <text>`, `warn <header line>`, `defer <text>`.
- `sign <address>` (submission only: see `callout.signing`; forwarded mail is never signed):
  `<signed address>`, `-` to leave the sender unchanged, or `defer <text>` when the directory is
  not loaded, so that the message waits rather than leaving unsigned (invariant 6).
- `authres <sender> [<recipient>]`: our verdict as a whole header line for the DATA ACL,
  `Authentication-Results: <authserv-id>; x-signed-sender=...` (see docs/authentication-results.md);
  `error authentication results are not configured` when `[verification] authentication_results`
  is off. It does not record a second event for a message the RCPT ACL already judged.
- Anything else: `error unknown command`, `error malformed request`, `error empty request`.
  `error` is a configuration or client fault: act only on `reject`, `defer` and `warn`.
- A fault of ours while answering any command: `defer <text>` (invariant 6), never silence.

Exim's fourth argument replaces each newline of the response when it is non-empty; an empty one
leaves the newline in place, so the ACL strips it. The RCPT ACL a postmaster pastes is
deploy/exim/verification-rcpt.conf (tested with the real Exim binary); the DATA ACL for our
Authentication-Results is deploy/exim/authentication-results.conf.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from . import authresults
from .decision import Action, Decision
from .exchange import CloseConnection, Exchanges
from .service import VerificationService
from .signing import Outcome, sign_sender

log = logging.getLogger("antiforgery.readsocket")

MAX_LINE = 2048


class RequestError(ValueError):
    """A request that cannot be read; the message is the `error` response."""


@dataclass(frozen=True, slots=True)
class Verify:
    sender: str
    recipient: str


@dataclass(frozen=True, slots=True)
class Sign:
    address: str


@dataclass
class LineParser:
    """Split a byte stream into request lines, sans I/O; `finish` yields an unterminated last line.

    After a line longer than MAX_LINE, `too_long` is set and nothing more is parsed: the lines
    before it are still answered, then the connection is closed, as there is no resynchronising.
    """

    too_long: bool = False
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[bytes]:
        if self.too_long:
            return []
        self._buffer += data
        lines: list[bytes] = []
        while (end := self._buffer.find(b"\n", 0, MAX_LINE)) >= 0:
            lines.append(bytes(self._buffer[:end]).rstrip(b"\r\n"))
            del self._buffer[: end + 1]
        if len(self._buffer) >= MAX_LINE:
            self.too_long = True
            self._buffer.clear()
        return lines

    def finish(self) -> list[bytes]:
        rest, self._buffer = bytes(self._buffer).rstrip(b"\r\n"), bytearray()
        return [rest] if rest and not self.too_long else []


def _address(token: str) -> str:
    return token.removeprefix("<").removesuffix(">")


@dataclass(frozen=True, slots=True)
class AuthRes:
    sender: str
    recipient: str


def _sender_and_recipient(fields: str) -> tuple[str, str]:
    """Split `<sender> [<recipient>]`: the sender ends at the first space after its quoted local
    part, if any (a quoted-pair, RFC 5321 section 4.1.2, does not end the quotes); the recipient is
    the rest of the line."""
    start = 1 if fields.startswith("<") else 0
    if fields[start : start + 1] == '"':
        start += 1
        while start < len(fields) and fields[start] != '"':
            start += 2 if fields[start] == "\\" else 1
    space = fields.find(" ", start)
    return (fields, "") if space < 0 else (fields[:space], fields[space + 1 :])


def parse_request(line: bytes) -> Verify | Sign | AuthRes:
    if not line:
        raise RequestError("empty request")
    text = line.decode("utf-8", "replace")
    tokens = text.split(" ")
    command = tokens[0].lower()
    if command in ("verify", "authres"):
        if len(tokens) < 2:
            raise RequestError("malformed request")
        sender, recipient = _sender_and_recipient(text.partition(" ")[2])
        kind = Verify if command == "verify" else AuthRes
        return kind(_address(sender), _address(recipient))
    if command == "sign":
        if len(tokens) != 2 or not _address(tokens[1]):
            raise RequestError("malformed request")
        return Sign(_address(tokens[1]))
    raise RequestError("unknown command")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def verify_response(decision: Decision) -> str:
    if decision.action is Action.REJECT:
        return f"reject {decision.code} {decision.enhanced} {decision.text}"
    if decision.action is Action.WARN and decision.header:
        return f"warn {decision.header}"
    if decision.action is Action.DEFER:
        return f"defer {decision.text}"
    return "accept"


class ReadsocketSession:
    def __init__(self, service: VerificationService, authserv_id: str | None = None) -> None:
        self.service = service
        self.authserv_id = authserv_id
        self.parser = LineParser()

    def answer(self, line: bytes) -> bytes:
        try:
            request = parse_request(line)
        except RequestError as exc:
            response = f"error {exc}"
        else:
            try:
                response = self._respond(request)
            except Exception:
                # Closing without an answer would read as "" in Exim, and its ACL acts only on
                # reject, defer and warn: a fault must cost a retry, never let mail through.
                log.exception("readsocket: %s failed", type(request).__name__.lower())
                response = "defer forgery check failed on our side; try again later"
        return _one_line(response).encode("utf-8", "replace") + b"\n"

    def _respond(self, request: Verify | Sign | AuthRes) -> str:
        if isinstance(request, Verify):
            decision = self.service.decide(self.service.request(request.sender, request.recipient), "readsocket")
            return verify_response(decision)
        if isinstance(request, AuthRes):
            return self._authentication_results(request)
        signing = sign_sender(self.service, request.address, "readsocket")
        if signing.outcome is Outcome.SIGNED:
            return signing.address
        if signing.outcome is Outcome.UNAVAILABLE:
            return "defer forgery protection unavailable: the directory has not been loaded"
        return "-"

    def _authentication_results(self, request: AuthRes) -> str:
        if not self.authserv_id:
            return "error authentication results are not configured"
        checked = self.service.request(request.sender, request.recipient, state="DATA")
        decision = self.service.decide(checked, "readsocket", record=False)
        return authresults.header(self.authserv_id, decision, None, request.sender)

    def feed(self, data: bytes) -> list[bytes | None]:
        lines: list[bytes | None] = [*self.parser.feed(data)]
        if self.parser.too_long:
            lines.append(None)  # answered with an error, then the connection is closed
        return lines

    def respond(self, line: bytes | None) -> bytes:
        if line is None:
            raise CloseConnection(b"error line too long\n")
        return self.answer(line)

    def finish(self) -> list[bytes | None]:
        """The client closed its side (Exim's shutdown): answer a last line that had no LF."""
        return [*self.parser.finish()]


def session_factory(service: VerificationService, authserv_id: str | None = None) -> Exchanges:
    return lambda: ReadsocketSession(service, authserv_id)
