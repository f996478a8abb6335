"""The value types verification returns: why an address is or is not genuine, machine-readable."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.Enum):
    """Why a verification came out as it did. The values are stable: logs and events store them."""

    VALID = "valid"
    UNSIGNED = "unsigned"
    BAD_MAC = "bad_mac"
    UNKNOWN_KEY = "unknown_key"
    EXPIRED = "expired"
    FROM_FUTURE = "from_future"
    MALFORMED = "malformed"
    TOO_LONG = "too_long"
    #: A header token (Verify-Sender:) presented as an envelope sender, or the reverse
    #: (seed 003, "Message Headers": the marker prevents re-use as an envelope sender).
    WRONG_PURPOSE = "wrong_purpose"


class TagKind(enum.Enum):
    """Which kind of tag an address carries; the one-letter marker in the native format."""

    ENVELOPE = "s"  # time-limited envelope sender, made at submission
    FIXED = "f"  # per (user, recipient) pair, no expiry, revocable in the store
    HEADER = "h"  # Verify-Sender:/Verify-From: header token, never valid as an envelope sender
    PRVS = "prvs"  # BATV, RFC draft-levine-smtp-batv, as made by Exim's ${prvs}


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of verifying one address.

    `address` is the address with any tag removed (the mailbox to route and look up), in the case it
    was given. `kind`, `key_id`, `issued` and `fixed_id` are set when a tag was parsed, even if the
    tag turned out to be invalid, so that logs can say *which* key or fixed tag was presented.
    """

    reason: Reason
    address: str
    kind: TagKind | None = None
    key_id: int | None = None
    issued: int | None = None  # unix seconds the tag's timestamp stands for
    expires: int | None = None  # unix seconds after which the tag is expired
    fixed_id: int | None = None
    tag: str | None = None  # the tag as presented, lowercased (blacklist key)

    @property
    def ok(self) -> bool:
        return self.reason is Reason.VALID

    def signed_form(self, separator: str) -> str | None:
        """The presented signed address in canonical (lower-case) form: the key of the blacklist.

        Two spellings of one tag (MTAs fold case, local parts may be quoted) give one key.
        """
        if self.tag is None:
            return None
        if self.kind is TagKind.PRVS:
            return f"{self.tag}={self.address}".lower()
        local, _, domain = self.address.rpartition("@")
        return f"{local}{separator}{self.tag}@{domain}".lower()

    @property
    def signed(self) -> bool:
        """True when the address carried something in the shape of a tag, valid or not."""
        return self.kind is not None
