"""Blacklisting a leaked signed address, shared by `antiforgery blacklist add` and the web page.

Seed 003, "Cryptography": "If an address is obtained by spammers, we could note it on a blacklist
of compromised addresses to limit the scope of the damage. The timestamp causes addresses to
expire automatically which limits the number of them we need to store on the blacklist." So an
entry lives until its tag expires; a fixed tag never expires and is revoked instead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from signed_sender import Keyring, Policy, Reason, TagKind, verify

from .store import ResolutionKind, Store


class LeakRefused(ValueError):
    """The address cannot be blacklisted; the message says why and what to do instead."""


@dataclass(frozen=True, slots=True)
class LeakReport:
    """What happened to a reported address: blacklisted until `expires_at`, or already expired."""

    signed_address: str  # canonical (lower-case) form, the blacklist key
    base_address: str
    expires_at: dt.datetime | None  # None only for a tag that carries no time
    blacklisted: bool  # False: the tag had expired already, so nothing was stored


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def blacklist_leak(
    store: Store,
    signed_address: str,
    keyring: Keyring,
    now: float,
    policy: Policy,
    reason: str,
    *,
    owner: str | None = None,
) -> LeakReport:
    """Blacklist `signed_address` until its tag expires.

    With `owner` (a login), only a tag on an address that leads to that user is accepted: a user
    may report their own leaked addresses, not have someone else's mail rejected.
    Raises LeakRefused for an untagged address, a fixed tag, a tag we did not make (a bad MAC, an
    unknown key, a time stamp from the future), or another user's address.
    """
    verdict = verify(signed_address, keyring, now, policy)
    if not verdict.signed or verdict.tag is None:
        raise LeakRefused(f"{signed_address} carries no tag; there is nothing to blacklist")
    if owner is not None:
        resolution = store.resolve(verdict.address)
        if resolution.kind is not ResolutionKind.USER or resolution.user is None or resolution.user.login != owner:
            raise LeakRefused(f"{verdict.address} is not one of your addresses")
    if verdict.kind is TagKind.FIXED:
        raise LeakRefused("fixed tags do not expire: revoke the fixed tag instead of blacklisting it")
    if verdict.reason not in (Reason.VALID, Reason.EXPIRED):
        # A forged tag is refused already; stored, it would live until its forged timestamp expires
        # (up to 2089) and let anyone grow the blacklist with tags that mean nothing.
        raise LeakRefused(
            f"the tag of {signed_address} was not made by this service ({verdict.reason.value}): it is"
            " refused already, so there is nothing to blacklist"
        )
    signed_form = verdict.signed_form(policy.separator) or signed_address
    if verdict.expires is None or verdict.expires < now:
        expires_at = _utc(verdict.expires) if verdict.expires is not None else None
        return LeakReport(signed_form, verdict.address, expires_at, blacklisted=False)
    expires_at = _utc(verdict.expires)
    store.blacklist_add(signed_form, verdict.address, reason, expires_at)
    return LeakReport(signed_form, verdict.address, expires_at, blacklisted=True)
