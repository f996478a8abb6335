"""Signature checks that need facts from the store: the blacklist and fixed-tag records.

`signed_sender.verify` decides what the tag itself proves; this module adds what only the site
knows (design invariant 2): a leaked tag is blacklisted, a fixed tag can be revoked, and a fixed
tag is only good on an address of the user it was issued to. The facts come in through a small
protocol so that the CLI can pass the store and the verification service its in-memory snapshot.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from signed_sender import Keyring, Policy, Reason, TagKind, Verdict, verify


class StoreReason(enum.Enum):
    """Refusals of a tag whose MAC and time are good; values are stable for logs and events."""

    BLACKLISTED = "blacklisted"
    REVOKED = "revoked"  # fixed tag unknown or revoked
    WRONG_USER = "wrong_user"  # fixed tag presented on an address of another user


class TagFacts(Protocol):
    def is_blacklisted(self, signed_form: str) -> bool: ...

    def fixed_tag_user(self, fixed_id: int) -> int | None:
        """The user id an active fixed tag belongs to, or None if unknown or revoked."""

    def user_of(self, address: str) -> int | None:
        """The user id an address belongs to (directly or through a single-target alias)."""


@dataclass(frozen=True, slots=True)
class TagCheck:
    verdict: Verdict
    refusal: StoreReason | None = None

    @property
    def ok(self) -> bool:
        return self.verdict.ok and self.refusal is None

    @property
    def reason(self) -> str:
        return self.refusal.value if self.refusal is not None else self.verdict.reason.value


def check_address(address: str, keyring: Keyring, now: float, policy: Policy, facts: TagFacts) -> TagCheck:
    verdict = verify(address, keyring, now, policy)
    if verdict.reason is not Reason.VALID:
        return TagCheck(verdict)
    signed_form = verdict.signed_form(policy.separator)
    if signed_form is not None and facts.is_blacklisted(signed_form):
        return TagCheck(verdict, StoreReason.BLACKLISTED)
    if verdict.kind is TagKind.FIXED and verdict.fixed_id is not None:
        owner = facts.fixed_tag_user(verdict.fixed_id)
        if owner is None:
            return TagCheck(verdict, StoreReason.REVOKED)
        if facts.user_of(verdict.address) != owner:
            return TagCheck(verdict, StoreReason.WRONG_USER)
    return TagCheck(verdict)
