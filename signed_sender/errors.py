"""Errors raised when an address cannot be signed. Verification never raises: it returns a Verdict."""

from __future__ import annotations


class SigningError(ValueError):
    """Base class: the address was not signed, and the message says why in one sentence."""


class MalformedAddress(SigningError):
    """The address is not one we can parse with certainty (see `address.parse_mailbox`)."""


class SignedTooLong(SigningError):
    """The signed local part would exceed 64 octets (RFC 5321 section 4.5.3.1.1).

    We refuse rather than truncate: a truncated tag never verifies, so the mail would be lost.
    """


class AlreadyTagged(SigningError):
    """The address already carries a tag (ours, BATV `prvs=`, or SRS); signing twice breaks bounces."""


class KeyringError(ValueError):
    """A keyring is unusable: no current key, a key id out of range, a secret too short."""
