"""Which envelope addresses a user may submit, and the signed sender each recipient gets.

`address_syntax`: submission takes plain addresses only, so that the address the proxy checks and
signs for is the address the upstream delivers to (the upstream trusts the proxy as a local
client and would apply its old routing rules to anything else). Design invariant 7: an
authenticated user may only use their own addresses as sender: their
primary and extra addresses, an alias that routes to them alone, or a multi-target alias of
which they are a direct member (a role address they share). Invariant 1: a message is signed
once, at submission: `MessageSigner` makes the time-limited signature once per message, so
every recipient and every delivery attempt sees the same envelope sender (greylisting works,
seed 003 "Envelope-dependent recipients"); recipients with a fixed tag get their fixed address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from signed_sender import Keyring, MalformedAddress, Policy, SigningError, sign, sign_fixed, strip_tag

from ..addresses import InvalidAddress, normalize_address
from ..routing import routing_targets
from ..signed_cache import SignedCache
from ..snapshot import Snapshot, SnapshotUser
from ..store.records import Mode, ResolutionKind

_CONTROL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class SenderCheck:
    """The answer to MAIL FROM: `user` is set when the sender is allowed."""

    user: SnapshotUser | None
    code: int = 250
    enhanced: str = "2.1.0"
    text: str = "sender ok"

    @property
    def ok(self) -> bool:
        return self.user is not None


def address_syntax(address: str) -> str | None:
    """Why `address` cannot be a submitted sender or recipient, or None if it can.

    Refused, each with the reason for the reply (`501 5.1.7` for a sender, `501 5.1.3` for a
    recipient, as Postfix answers): white space or control characters (a bare CR in a command
    line); bytes that are not UTF-8 (aiosmtpd hands them on as surrogates); an address literal
    `user@[192.0.2.1]` (RFC 5321 section 4.1.3), which bypasses the domain the signing and the
    fixed tags are keyed on; old routing syntax (`gateway.routing`: the percent hack, bang paths,
    a quoted local part hiding an `@`), which the upstream may route elsewhere than it reads;
    and whatever the store itself would not accept (`gateway.addresses.normalize_address`: more
    or fewer than one `@`, a local part that is not a dot-atom or longer than 64 octets, a bad
    domain, more than 254 octets; RFC 5321 sections 4.1.2 and 4.5.3.1). A source route
    (`<@relay:user@domain>`) never gets here: aiosmtpd drops it, as RFC 5321 section 4.1.1.3 asks.
    """
    if _CONTROL_OR_SPACE.search(address):
        return f"{address!r} contains white space or control characters"
    if _SURROGATE.search(address):
        return f"{address!r} is not valid UTF-8"
    if address.rpartition("@")[2].startswith("["):
        return f"{address} is an address literal; use the domain name"
    if routing_targets(address):
        return f"{address} uses old routing syntax (%, ! or a quoted @); write the plain address"
    try:
        normalize_address(address)
    except InvalidAddress as exc:
        return str(exc)
    return None


def _candidates(address: str, delimiters: str) -> list[str]:
    """The address, then without a subaddress (alice+lists@ is alice@), as the MTA routes it."""
    local, _, domain = address.lower().rpartition("@")
    cuts = [i for i in (local.find(d) for d in delimiters) if i > 0]
    return [f"{local}@{domain}"] + ([f"{local[: min(cuts)]}@{domain}"] if cuts else [])


def owns(user: SnapshotUser, address: str, snapshot: Snapshot, delimiters: str) -> bool:
    for candidate in _candidates(address, delimiters):
        route = snapshot.route(candidate)
        if route.kind is ResolutionKind.USER:
            return route.user_id == user.id
        if route.kind is ResolutionKind.MULTI_TARGET:
            targets = snapshot.alias_targets(route.via[-1]) or ()
            return any(t.user_id == user.id or (t.address and snapshot.owner(t.address) == user.id) for t in targets)
    return False


def check_sender(login: str, mail_from: str, snapshot: Snapshot, policy: Policy, delimiters: str = "") -> SenderCheck:
    """The MAIL FROM verdict for an authenticated user (RFC 5321 section 3.3; codes RFC 3463)."""
    user = snapshot.user(snapshot.logins.get(login.lower()))
    if user is None:
        return SenderCheck(None, 451, "4.7.1", f"user {login} is not in the directory yet; try again later")
    if mail_from == "":
        return SenderCheck(user)  # the user's own software sending a bounce or receipt: never signed
    try:
        base = strip_tag(mail_from, policy)
    except MalformedAddress as exc:
        return SenderCheck(None, 553, "5.1.7", f"{mail_from} is not a valid sender address: {exc}")
    if not owns(user, base, snapshot, delimiters or policy.separator):
        return SenderCheck(
            None, 553, "5.7.1", f"{user.login} may not send as {mail_from}; use your own address {user.primary_address}"
        )
    return SenderCheck(user)


class MessageSigner:
    """The envelope senders of one message; made at MAIL FROM time, then asked per recipient.

    Raises SigningError at construction if the sender cannot be signed (too long): mail from an
    opted-in user must never leave unsigned, or our own relays would reject it as a forgery.
    """

    def __init__(
        self,
        user: SnapshotUser,
        mail_from: str,
        snapshot: Snapshot,
        keyring: Keyring,
        policy: Policy,
        now: float,
        signed: SignedCache | None = None,
    ) -> None:
        self.user = user
        self.mail_from = mail_from
        self.snapshot = snapshot
        self.keyring = keyring
        self.policy = policy
        self.signs = user.mode is not Mode.OFF and mail_from != "" and strip_tag(mail_from, policy) == mail_from
        signer = signed.sign if signed is not None else sign
        self.default = signer(mail_from, keyring, now, policy) if self.signs else mail_from

    def sender_for(self, recipient: str) -> str:
        if not self.signs:
            return self.mail_from
        fixed_id = self.snapshot.fixed_tag_for(self.user.id, recipient)
        if fixed_id is None:
            return self.default
        return sign_fixed(self.mail_from, fixed_id, self.keyring, self.policy)


__all__ = ["MessageSigner", "SenderCheck", "SigningError", "address_syntax", "check_sender", "owns"]
