"""Canonical forms of the addresses, domains and recipient patterns the store keeps.

Every address is stored lower-cased: MTAs fold case in local parts (design invariant 2), and a
lookup that misses because of case is a protected user left unprotected. Syntax is checked with
`signed_sender.parse_mailbox`, so that the store only ever holds addresses the signer accepts,
plus the RFC 5321 length limits, which parsing alone does not enforce.
"""

from __future__ import annotations

from signed_sender import MalformedAddress, parse_mailbox
from signed_sender.address import MAX_ADDRESS_OCTETS, MAX_LOCAL_PART_OCTETS, is_domain, octets

#: A fixed-tag recipient may name every address of one domain, for list servers that send
#: from per-list or per-message addresses (seed 003, "Envelope-dependent recipients").
WILDCARD_PREFIX = "*@"


class InvalidAddress(ValueError):
    """Not an address (or domain, or pattern) the store accepts; the message says why in one line."""


def normalize_address(text: str) -> str:
    """Return `text` as the store keeps it: stripped, lower-cased, checked; raise InvalidAddress.

    Checked: exactly one usable `@` with non-empty parts, no white space or control characters,
    a dot-atom local part of at most 64 octets (RFC 5321 section 4.5.3.1.1), a valid domain, and
    at most 254 octets in all (RFC 5321 section 4.5.3.1.3 less the angle brackets).
    """
    if not isinstance(text, str):
        raise InvalidAddress(f"an address must be text, not {type(text).__name__}")
    candidate = text.strip()
    if candidate.count("@") != 1:
        raise InvalidAddress(f"{candidate!r} is not an address: it must contain exactly one @")
    try:
        mailbox = parse_mailbox(candidate).lower()
    except MalformedAddress as exc:
        raise InvalidAddress(f"{candidate!r} is not an address: {exc}") from None
    if octets(mailbox.local) > MAX_LOCAL_PART_OCTETS:
        raise InvalidAddress(f"{candidate!r}: the local part is longer than {MAX_LOCAL_PART_OCTETS} octets")
    address = str(mailbox)
    if octets(address) > MAX_ADDRESS_OCTETS:
        raise InvalidAddress(f"{candidate!r} is longer than {MAX_ADDRESS_OCTETS} octets")
    return address


def normalize_domain(text: str) -> str:
    """A mail domain as stored: stripped, lower-cased, without a trailing dot; raise InvalidAddress."""
    if not isinstance(text, str):
        raise InvalidAddress(f"a domain must be text, not {type(text).__name__}")
    domain = text.strip().lower()
    if domain.endswith("."):
        domain = domain[:-1]
    if not is_domain(domain):
        raise InvalidAddress(f"{text.strip()!r} is not a valid domain name")
    return domain


def normalize_recipient(text: str) -> str:
    """A fixed-tag recipient: an address, or `*@domain` for every address of that domain."""
    candidate = text.strip() if isinstance(text, str) else text
    if isinstance(candidate, str) and candidate.startswith(WILDCARD_PREFIX):
        return WILDCARD_PREFIX + normalize_domain(candidate[len(WILDCARD_PREFIX) :])
    return normalize_address(candidate)


def recipient_matches(pattern: str, address: str) -> bool:
    """True if the normalized `pattern` covers the normalized `address` (exact, or `*@` its domain)."""
    if pattern.startswith(WILDCARD_PREFIX):
        return address.rpartition("@")[2] == pattern[len(WILDCARD_PREFIX) :]
    return pattern == address
