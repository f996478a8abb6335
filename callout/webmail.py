"""`POST /v1/sign`: the signed envelope senders of one message, for a trusted webmail server.

Seed 003, "Message submission": "When an opted-in user sends a message via Pine on Hermes or
Webmail, the same rewriting occurs." A webmail that submits by SMTP through the proxy gets that
for free; one that hands mail to its own MTA asks here instead, once per message, and uses the
answer as MAIL FROM for each recipient (docs/webmail.md)::

    POST /v1/sign  Authorization: Bearer <token>
    {"login": "alice", "sender": "alice@example.ac.uk", "recipients": ["x@y.org", ...]}
    -> 200 {"senders": {"x@y.org": "alice=...@example.ac.uk", ...}, "signed": true}

The same rules as the proxy (`gateway.submission.plan`): the sender must be the user's own
(design invariant 7, else 403 with the reason), the time-limited signature is made once per call
(invariant 1), recipients with a fixed tag get their fixed address, and a user who has not opted
in gets the sender unchanged (invariant 3). The webmail has authenticated the user itself; the
bearer token (RFC 6750 section 2.1) authenticates the webmail, compared in constant time. Without
a configured token the route does not exist (404).
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

from gateway.submission.plan import MessageSigner, SigningError, check_sender

from .service import VerificationService

log = logging.getLogger("antiforgery.webmail")

MAX_RECIPIENTS = 1000
MAX_FIELD = 1024
FIELDS = frozenset({"login", "sender", "recipients"})


class SignError(Exception):
    """A request this route refuses: HTTP status, a sentence, and optionally WWW-Authenticate."""

    def __init__(self, status: int, message: str, challenge: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.challenge = challenge
        self.extra = extra


@dataclass(frozen=True, slots=True)
class SignRequest:
    login: str
    sender: str
    recipients: tuple[str, ...]


def authorised(authorization: str | None, token: bytes) -> bool:
    """`Authorization: Bearer <token>` (RFC 6750 section 2.1; the scheme is case-insensitive, RFC 9110 11.1)."""
    if not authorization:
        return False
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode("ascii", "replace"), token)


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SignError(400, f"{name} must be a string")
    if len(value) > MAX_FIELD or any(ord(ch) < 32 or ch == "\x7f" for ch in value):
        raise SignError(400, f"{name} is too long or contains control characters")
    return value


def parse_request(body: bytes) -> SignRequest:
    """The JSON body, checked whole; every error names the field."""
    try:
        given = json.loads(body)
    except (ValueError, RecursionError):
        raise SignError(400, "the body is not valid JSON") from None
    if not isinstance(given, dict):
        raise SignError(400, "the body must be a JSON object")
    unknown = sorted(set(given) - FIELDS)
    if unknown:
        raise SignError(400, f"unknown field {unknown[0]!r}; expected login, sender, recipients")
    missing = sorted(FIELDS - set(given))
    if missing:
        raise SignError(400, f"{missing[0]} is required")
    login = _text("login", given["login"])
    if not login:
        raise SignError(400, "login must not be empty")
    sender = _text("sender", given["sender"]).removeprefix("<").removesuffix(">")
    recipients = given["recipients"]
    if not isinstance(recipients, list) or not recipients or len(recipients) > MAX_RECIPIENTS:
        raise SignError(400, f"recipients must be a list of 1 to {MAX_RECIPIENTS} addresses")
    checked = tuple(_text("each recipient", r) for r in recipients)
    for recipient in checked:
        if "@" not in recipient.strip("@"):
            raise SignError(400, f"recipient {recipient!r} is not an address (local@domain)")
    return SignRequest(login, sender, checked)


def sign_message(
    service: VerificationService, token: bytes | None, authorization: str | None, method: str, body: bytes
) -> dict[str, Any]:
    """The 200 payload for one message, or SignError."""
    if token is None:
        raise SignError(404, "no such resource: /v1/sign; try /v1/verify or /healthz")
    if not authorised(authorization, token):
        raise SignError(401, "a valid 'Authorization: Bearer <token>' is required", 'Bearer realm="antiforgery"')
    if method != "POST":
        raise SignError(405, "use POST")
    request = parse_request(body)
    snapshot = service.snapshot
    if snapshot is None:
        raise SignError(503, "the directory has not been loaded from the store; try again later")
    rules = service.rules
    verdict = check_sender(request.login, request.sender, snapshot, rules.policy, rules.delimiters)
    if verdict.user is None:
        status = 503 if verdict.code < 500 else 403
        log.info("webmail sign refused login=%s sender=%s code=%d", request.login, request.sender, verdict.code)
        raise SignError(status, verdict.text, code=verdict.code, enhanced=verdict.enhanced)
    try:
        signer = MessageSigner(verdict.user, request.sender, snapshot, rules.keyring, rules.policy, service.clock())
    except SigningError as exc:
        raise SignError(403, f"{request.sender} cannot be signed: {exc}", code=553, enhanced="5.1.7") from None
    senders = {recipient: signer.sender_for(recipient) for recipient in request.recipients}
    log.info(
        "webmail sign login=%s sender=%s recipients=%d signed=%s",
        verdict.user.login,
        request.sender,
        len(senders),
        signer.signs,
    )
    return {"senders": senders, "signed": signer.signs}
