"""Signing a submitted message's envelope sender on the MTA's behalf: the rule both sign maps share.

Seed 003, "Message submission", and design invariant 1: a message is signed once, at submission.
The Postfix socketmap `sign` map and the Exim readsocket `sign` command both land here. Neither can
tell a submission from a forwarded message, so the MTA must only ask from its submission path
(Postfix: the cleanup service behind the submission port; Exim: the transport of authenticated
mail). Forwarded and relayed mail is never signed: that is the MTA configuration's job.

What is signed is exactly what the verifier would demand a tag of: protection is judged by the same
routing `decide` applies to senders (`decision.sender_owner`: single-target aliases, recipient
delimiters, probe and bounce-like senders), so signing and verifying cannot disagree about who is
protected; tests/callout/test_signing_agrees.py holds them to it. A user in
testing or full mode is signed (invariant 3); an address that already carries a tag is never signed
again, and one whose signed local part would exceed 64 octets is left alone and logged (invariant 2).
"""

from __future__ import annotations

import enum
import functools
import logging
import re
from dataclasses import dataclass

from prometheus_client import Counter

from gateway.signed_cache import SignedCache
from signed_sender import AlreadyTagged, SignedTooLong, SigningError

from .decision import sender_owner
from .service import VerificationService

log = logging.getLogger("antiforgery.sign")

SIGNINGS = Counter("antiforgery_signings", "Answers to MTA signing requests", ["adapter", "outcome"])
_signings = functools.cache(SIGNINGS.labels)  # labels() locks and builds a key on every call


class Outcome(enum.Enum):
    SIGNED = "signed"
    NOT_PROTECTED = "not_protected"  # not opted in, unknown, or not a whole address
    ALREADY_TAGGED = "already_tagged"  # ours, BATV prvs= or SRS: never signed twice
    TOO_LONG = "too_long"  # the signed local part would exceed 64 octets
    UNSIGNABLE = "unsignable"  # malformed, or the clock is outside the format's range
    UNAVAILABLE = "unavailable"  # the directory is not loaded: the MTA must retry, never guess


@dataclass(frozen=True, slots=True)
class Signing:
    outcome: Outcome
    #: The signed address for SIGNED; otherwise the address as asked.
    address: str


_SPACE = re.compile(r"\s")


def is_whole_address(text: str) -> bool:
    """`local@domain` with both parts present; Postfix-style partial keys (`@domain`, `user`, `user@`) are not."""
    local, at, domain = text.rpartition("@")
    return bool(at and local and domain) and _SPACE.search(domain) is None


#: One per process: every adapter signs with the one keyring `serve` loaded.
_CACHE = SignedCache()


def sign_sender(service: VerificationService, address: str, adapter: str) -> Signing:
    address = address.strip()
    outcome, result = _sign(service, address)
    _signings(adapter, outcome.value).inc()
    return Signing(outcome, result)


def _sign(service: VerificationService, address: str) -> tuple[Outcome, str]:
    snapshot = service.snapshot
    if snapshot is None:
        return Outcome.UNAVAILABLE, address
    if not is_whole_address(address):
        return Outcome.NOT_PROTECTED, address
    rules = service.rules
    try:
        user = sender_owner(address, snapshot, rules)
    except Exception:  # a bug must cost a retry, never an unsigned message from a protected user
        log.exception("sign: looking up the owner of %r failed", address)
        return Outcome.UNAVAILABLE, address
    if user is None:
        return Outcome.NOT_PROTECTED, address
    try:
        signed = _CACHE.sign(address, rules.keyring, service.clock(), rules.policy)
    except AlreadyTagged:
        return Outcome.ALREADY_TAGGED, address
    except SigningError as exc:  # SignedTooLong, MalformedAddress, a clock out of range
        log.warning("sign: not signed, user=%s: %s", user.login, exc)
        return Outcome.TOO_LONG if isinstance(exc, SignedTooLong) else Outcome.UNSIGNABLE, address
    # The MTA logs the rewritten sender of every message (Postfix cleanup/qmgr from=<...>, Exim's
    # <= line); a line of our own per signing costs a fifth of the request (issue 7), so it is debug.
    log.debug("sign: sender=%s user=%s mode=%s", address, user.login, user.mode.value)
    return Outcome.SIGNED, signed
