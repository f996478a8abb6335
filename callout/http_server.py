"""HTTP/JSON adapter for webmail and list servers: the same decision over HTTP/1.1 (RFC 9110, RFC 9112).

Routes:

- `GET /v1/verify?sender=...&recipient=...` (query percent-encoded: a `+` in an address is `%2B`)
  and `POST /v1/verify` with a JSON object body `{"sender": ..., "recipient": ...}`; `sender` is
  required (`""` or `"<>"` is the null sender, whose recipient is then checked), `recipient` and
  `client_address` are optional. Answer 200 with
  `{"action", "reason", "code", "enhanced", "text", "header", "checked", "role"}`; a `defer` is a
  decision like the others (the store is unavailable: try again later), not an HTTP error.
- `POST /v1/sign` with `Authorization: Bearer <token>`: the signed senders of one message, for a
  trusted webmail (callout/webmail.py, docs/webmail.md); only when `[verification]
  webmail_token_file` is set, else 404.
- `GET /healthz`: 200 when a directory snapshot is loaded, 503 otherwise.

Every error is a JSON body `{"error": "<sentence>"}` with 400 (malformed), 401 (with
WWW-Authenticate), 403, 404, 405 (with Allow), 413 (body over 16 KiB), 431 (head over 8 KiB),
501 (Transfer-Encoding), 503 or 500, never a traceback.

Why a small parser of our own, run by `callout.exchange` as every adapter: `VerificationService.decide`
queues events on an asyncio queue, so every adapter must run on the service's event loop; stdlib `http.server`
is blocking and would need a thread. aiohttp would be a large dependency for two routes. The
subset spoken here is deliberately narrow (sans I/O, like h11 but smaller): origin-form targets,
CRLF line ends, no obsolete line folding, a body only by Content-Length (RFC 9112 section 6.3: a
Transfer-Encoding we do not implement is 501), persistent connections unless `Connection: close`
or HTTP/1.0, and the connection closed after any error. Listen on loopback, or put a TLS-terminating
proxy in front (the sign route carries a bearer token)::

    [verification]
    http_listen = "127.0.0.1:10080"
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from . import webmail
from .exchange import CloseConnection, Exchanges
from .service import VerificationService

log = logging.getLogger("antiforgery.http")

MAX_HEAD = 8192
MAX_BODY = 16384
MAX_FIELD = 1024  # an address is at most 256 octets (RFC 5321 section 4.5.3.1.3); be generous
FIELDS = frozenset({"sender", "recipient", "client_address"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 section 5.6.2
_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) (/[!-~]*) HTTP/(1\.[01])")
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


class HttpError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        allow: str | None = None,
        challenge: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.allow = allow
        self.challenge = challenge  # WWW-Authenticate, with a 401
        self.extra = extra or {}  # more fields for the error body


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    target: str
    version: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        return self.version == "1.1" and "close" not in tokens


@dataclass
class RequestParser:
    """Bytes in, complete requests out (sans I/O).

    The first malformed request sets `error`; the requests before it are still returned (and
    answered), nothing after it is parsed, and the connection is closed after the error reply.
    """

    error: HttpError | None = None
    _buffer: bytearray = field(default_factory=bytearray)
    _head: tuple[str, str, str, dict[str, str]] | None = None
    _length: int = 0

    def feed(self, data: bytes) -> list[HttpRequest]:
        out: list[HttpRequest] = []
        if self.error is None:
            self._buffer += data
            try:
                while (request := self._next()) is not None:
                    out.append(request)
            except HttpError as exc:
                self.error = exc
                self._buffer.clear()
        return out

    def _next(self) -> HttpRequest | None:
        if self._head is None:
            # Both checks look at the same window the head must end in, so that where the network
            # cut the stream cannot change the answer (found by fuzzing: tests/fuzz/).
            end = self._buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
            if end < 0:
                if self._buffer.find(b"\n\n", 0, MAX_HEAD + 4) >= 0:
                    raise HttpError(400, "lines must end in CRLF")
                if len(self._buffer) >= MAX_HEAD + 4:
                    raise HttpError(431, f"request line and headers exceed {MAX_HEAD} octets")
                return None
            self._head = _parse_head(bytes(self._buffer[:end]))
            self._length = _content_length(self._head[3])
            del self._buffer[: end + 4]
        if len(self._buffer) < self._length:
            return None
        method, target, version, headers = self._head
        body = bytes(self._buffer[: self._length])
        del self._buffer[: self._length]
        self._head, self._length = None, 0
        return HttpRequest(method, target, version, headers, body)


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "the request head is not ASCII") from None
    request_line, *lines = text.split("\r\n")
    match = _REQUEST_LINE.fullmatch(request_line)
    if match is None:
        raise HttpError(400, "malformed request line: expected 'METHOD /path HTTP/1.1'")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not _TOKEN.fullmatch(name) or "\r" in value or "\n" in value:
            raise HttpError(400, "malformed header line")
        name, value = name.lower(), value.strip(" \t")
        if name in headers and name == "content-length" and headers[name] != value:
            raise HttpError(400, "conflicting Content-Length headers")
        headers[name] = f"{headers[name]}, {value}" if name in headers and name != "content-length" else value
    return match[1], match[2], match[3], headers


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise HttpError(501, "Transfer-Encoding is not supported; send a Content-Length")
    value = headers.get("content-length", "0")
    if not value.isascii() or not value.isdigit():
        raise HttpError(400, "Content-Length is not a number")
    # Compared as digits first: int() refuses over 4300 of them with a ValueError (Python 3.11).
    digits = value.lstrip("0") or "0"
    if len(digits) > len(str(MAX_BODY)) or int(digits) > MAX_BODY:
        raise HttpError(413, f"request body exceeds {MAX_BODY} octets")
    return int(digits)


def _fields(given: dict[str, Any]) -> dict[str, str]:
    unknown = sorted(set(given) - FIELDS)
    if unknown:
        raise HttpError(400, f"unknown field {unknown[0]!r}; expected sender, recipient, client_address")
    if "sender" not in given:
        raise HttpError(400, "sender is required ('' or '<>' for the null sender)")
    for name, value in given.items():
        if not isinstance(value, str):
            raise HttpError(400, f"{name} must be a string")
        if len(value) > MAX_FIELD or any(ord(ch) < 32 or ch == "\x7f" for ch in value):
            raise HttpError(400, f"{name} is too long or contains control characters")
    return given


def _query_fields(query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(
            query, keep_blank_values=True, strict_parsing=True, errors="strict", max_num_fields=len(FIELDS)
        )
    except ValueError:  # includes UnicodeDecodeError for percent-encoded octets that are not UTF-8
        raise HttpError(400, "malformed query string") from None
    given = dict(pairs)
    if len(given) != len(pairs):
        raise HttpError(400, "a query parameter is given twice")
    return _fields(given)


def _json_fields(body: bytes) -> dict[str, str]:
    try:
        given = json.loads(body)
    except (ValueError, RecursionError):
        raise HttpError(400, "the body is not valid JSON") from None
    if not isinstance(given, dict):
        raise HttpError(400, "the body must be a JSON object")
    return _fields(given)


def encode_response(
    status: int, payload: dict[str, Any], *, close: bool, allow: str | None = None, challenge: str | None = None
) -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
    ]
    if allow:
        head.append(f"Allow: {allow}")
    if challenge:
        head.append(f"WWW-Authenticate: {challenge}")
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class HttpSession:
    def __init__(self, service: VerificationService, webmail_token: bytes | None = None) -> None:
        self.service = service
        self.webmail_token = webmail_token
        self.parser = RequestParser()

    def route(self, request: HttpRequest) -> tuple[int, dict[str, Any]]:
        path, _, query = request.target.partition("?")
        if path == "/healthz":
            if request.method != "GET":
                raise HttpError(405, "use GET", allow="GET")
            snapshot = self.service.snapshot
            if snapshot is None:
                return 503, {"status": "unavailable", "snapshot_version": None}
            return 200, {"status": "ok", "snapshot_version": snapshot.version}
        if path == "/v1/sign":
            try:
                return 200, webmail.sign_message(
                    self.service, self.webmail_token, request.headers.get("authorization"), request.method, request.body
                )
            except webmail.SignError as exc:
                allow = "POST" if exc.status == 405 else None
                raise HttpError(exc.status, str(exc), allow, exc.challenge, exc.extra) from None
        if path != "/v1/verify":
            raise HttpError(404, f"no such resource: {path}; try /v1/verify or /healthz")
        if request.method == "GET":
            given = _query_fields(query)
        elif request.method == "POST":
            given = _json_fields(request.body)
        else:
            raise HttpError(405, "use GET or POST", allow="GET, POST")
        decision = self.service.decide(
            self.service.request(given["sender"], given.get("recipient", ""), given.get("client_address") or None),
            "http",
        )
        return 200, {
            "action": decision.action.value,
            "reason": decision.reason,
            "code": decision.code,
            "enhanced": decision.enhanced,
            "text": decision.text,
            "header": decision.header,
            "checked": decision.checked,
            "role": decision.role.value if decision.role else None,
        }

    def answer(self, request: HttpRequest) -> tuple[bytes, bool]:
        """The response bytes, and whether to keep the connection open after them."""
        try:
            status, payload = self.route(request)
        except HttpError as exc:
            payload = {"error": str(exc), **exc.extra}
            return encode_response(exc.status, payload, close=True, allow=exc.allow, challenge=exc.challenge), False
        except Exception:
            log.exception("http: %s %s failed", request.method, request.target.partition("?")[0])
            return encode_response(500, {"error": "internal error"}, close=True), False
        keep = request.keep_alive
        return encode_response(status, payload, close=not keep), keep

    def feed(self, data: bytes) -> list[HttpRequest | HttpError]:
        requests: list[HttpRequest | HttpError] = [*self.parser.feed(data)]
        if self.parser.error is not None:
            requests.append(self.parser.error)  # answered, then the connection is closed
        return requests

    def respond(self, request: HttpRequest | HttpError) -> bytes:
        if isinstance(request, HttpError):
            raise CloseConnection(encode_response(request.status, {"error": str(request)}, close=True))
        response, keep = self.answer(request)
        if not keep:
            raise CloseConnection(response)
        return response

    def finish(self) -> list[HttpRequest | HttpError]:
        return []


def session_factory(service: VerificationService, webmail_token: bytes | None = None) -> Exchanges:
    return lambda: HttpSession(service, webmail_token)
