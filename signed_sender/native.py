"""The native signed-address format (docs/signed-address-format.md is the specification).

    alice=sbaaaaxxxxxxxxxx@example.ac.uk
         ^^^^^^^^^^^^^^^^^ tag: marker, key id, timestamp or fixed id, MAC

Seed 003, "Mechanism": the signature is an extension of the local part, so sites that know nothing
of it pass it through, and bounces come back to us where the tag is checked. Everything here is a
pure function of its arguments: the caller passes the keys and the time (design: no clock, no I/O).
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass

from . import prvs
from .address import MAX_ADDRESS_OCTETS, MAX_LOCAL_PART_OCTETS, Mailbox, octets, parse_mailbox
from .errors import AlreadyTagged, MalformedAddress, SignedTooLong, SigningError
from .keys import Keyring
from .verdict import Reason, TagKind, Verdict

#: RFC 4648 section 6 base32, lowercased: no characters that case folding can confuse.
ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_VALUE = {ch: i for i, ch in enumerate(ALPHABET)}

MAC_CHARS = 10  # 50 bits of HMAC-SHA256; see the format document for the guessing argument
_MAC_BYTES = -(-5 * MAC_CHARS // 8)  # whole bytes that carry the MAC's bits
TIME_CHARS = 4  # hours since 1970-01-01T00:00Z, 20 bits: good until the year 2089
MAX_FIXED_ID_CHARS = 7
TIMED_TAG_CHARS = 2 + TIME_CHARS + MAC_CHARS
MIN_TAG_CHARS = 2 + 1 + MAC_CHARS
MAX_TAG_CHARS = 2 + MAX_FIXED_ID_CHARS + MAC_CHARS
HOUR = 3600
MAX_FIXED_ID = 32**MAX_FIXED_ID_CHARS - 1

#: Separators that never occur inside our tags and that MTAs accept as suffix delimiters.
SEPARATORS = frozenset("=+-_")
#: Prefixes of other rewriting schemes; a sender carrying one is never signed again.
FOREIGN_TAG_PREFIXES = ("prvs=", "msprvs1=", "btv1=", "srs0=", "srs1=")


class Purpose(enum.Enum):
    """What the verifier is checking; header tokens must not pass as envelope senders."""

    ENVELOPE = "envelope"
    HEADER = "header"


_ACCEPTED_KINDS = {
    Purpose.ENVELOPE: frozenset({TagKind.ENVELOPE, TagKind.FIXED, TagKind.PRVS}),
    Purpose.HEADER: frozenset({TagKind.HEADER}),
}


@dataclass(frozen=True, slots=True)
class Policy:
    """Site choices that sign and verify must agree on."""

    separator: str = "="
    max_age: int = 7 * 86400  # a tag verifies this long after its timestamp
    max_skew: int = HOUR  # tolerated clock difference between signing and verifying nodes
    accept_prvs: bool = True  # recognise BATV prvs= senders when verifying

    def __post_init__(self) -> None:
        if self.separator not in SEPARATORS:
            raise ValueError(f"separator must be one of {''.join(sorted(SEPARATORS))!r}")
        if self.max_age <= 0 or self.max_skew < 0:
            raise ValueError("max_age must be positive and max_skew not negative")


DEFAULT_POLICY = Policy()


def encode_int(value: int, width: int) -> str:
    """Big-endian base32 digits, exactly `width` characters."""
    if not 0 <= value < 32**width:
        raise ValueError(f"{value} does not fit in {width} base32 characters")
    return "".join(ALPHABET[(value >> (5 * (width - 1 - i))) & 31] for i in range(width))


def decode_int(text: str) -> int:
    value = 0
    for ch in text:
        value = (value << 5) | _VALUE[ch]
    return value


#: Every pair of base32 characters, indexed by the ten bits they carry: the MAC is five lookups.
_PAIRS = tuple(first + second for first in ALPHABET for second in ALPHABET)
_MAC_SHIFT = 8 * _MAC_BYTES - 5 * MAC_CHARS  # bits of the last whole byte beyond the MAC's 50
assert MAC_CHARS == 10, "_mac encodes exactly five pairs"


def _mac(secret: bytes, head: str, mailbox: Mailbox) -> str:
    """First 50 bits of HMAC-SHA256 over the tag head and the lowercased address, in base32.

    Big-endian from the first byte, as RFC 4648 base32 reads them (the format document's test
    vectors hold it to that): five table lookups cost a fifth of base64.b32encode, which is
    Python code in this interpreter, on every signing and every verified tag (issue 7)."""
    message = f"{head}:{mailbox.lower()}".encode("utf-8", "surrogatepass")
    bits = int.from_bytes(hmac.digest(secret, message, "sha256")[:_MAC_BYTES], "big") >> _MAC_SHIFT
    pairs = _PAIRS
    high = pairs[bits >> 40] + pairs[bits >> 30 & 1023]
    return high + pairs[bits >> 20 & 1023] + pairs[bits >> 10 & 1023] + pairs[bits & 1023]


def _is_tag_like(suffix: str) -> bool:
    return (
        MIN_TAG_CHARS <= len(suffix) <= MAX_TAG_CHARS
        and suffix[0] in ("s", "f", "h")
        and all(ch in _VALUE for ch in suffix)
    )


def _split_tag(local: str, separator: str) -> tuple[str, str | None]:
    """(local part without tag, lowercased tag) when the local part ends in something tag-like."""
    base, sep, suffix = local.rpartition(separator)
    if sep and base and _is_tag_like(suffix.lower()):
        return base, suffix.lower()
    return local, None


def strip_tag(address: str, policy: Policy = DEFAULT_POLICY) -> str:
    """The mailbox an address stands for, without any tag of ours or a BATV prvs= prefix.

    Needs no key: it says where an address routes, not whether its tag is genuine.
    Raises MalformedAddress if the address cannot be parsed.
    """
    if policy.accept_prvs and prvs.is_prvs(address):
        address = address.split("=", 2)[2]
    mailbox = parse_mailbox(address)
    base, _tag = _split_tag(mailbox.local, policy.separator)
    return f"{base}@{mailbox.domain}"


def _make(mailbox: Mailbox, kind: TagKind, body: str, keyring: Keyring, policy: Policy) -> str:
    lowered = mailbox.local.lower()
    if lowered.startswith(FOREIGN_TAG_PREFIXES) or _split_tag(mailbox.local, policy.separator)[1]:
        raise AlreadyTagged(f"{mailbox} already carries a tag; it is not signed again")
    key = keyring.current
    head = kind.value + ALPHABET[key.id] + body
    local = f"{mailbox.local}{policy.separator}{head}{_mac(key.secret, head, mailbox)}"
    if octets(local) > MAX_LOCAL_PART_OCTETS:
        room = MAX_LOCAL_PART_OCTETS - (octets(local) - octets(mailbox.local))
        raise SignedTooLong(
            f"{mailbox} cannot be signed: the signed local part would be {octets(local)} octets, "
            f"over the limit of {MAX_LOCAL_PART_OCTETS}; local parts up to {room} octets can be signed"
        )
    signed = f"{local}@{mailbox.domain}"
    if octets(signed) > MAX_ADDRESS_OCTETS:  # found by fuzzing: verify refuses such an address
        raise SignedTooLong(f"{mailbox} cannot be signed: the signed address would exceed {MAX_ADDRESS_OCTETS} octets")
    return signed


def _hours(now: float) -> int:
    hours = int(now) // HOUR
    if not 0 <= hours < 32**TIME_CHARS:
        raise SigningError("the time is outside the range the format can carry (1970 to 2089)")
    return hours


def sign(address: str, keyring: Keyring, now: float, policy: Policy = DEFAULT_POLICY) -> str:
    """Sign an envelope sender with the current key (seed 003, "Message submission").

    Raises SigningError (MalformedAddress, AlreadyTagged, SignedTooLong) rather than ever
    returning an address that would not verify.
    """
    stamp = encode_int(_hours(now), TIME_CHARS)
    return _make(parse_mailbox(address), TagKind.ENVELOPE, stamp, keyring, policy)


def sign_header(address: str, keyring: Keyring, now: float, policy: Policy = DEFAULT_POLICY) -> str:
    """A token for Verify-Sender:/Verify-From: (seed 003, "Message Headers")."""
    stamp = encode_int(_hours(now), TIME_CHARS)
    return _make(parse_mailbox(address), TagKind.HEADER, stamp, keyring, policy)


def sign_fixed(address: str, fixed_id: int, keyring: Keyring, policy: Policy = DEFAULT_POLICY) -> str:
    """A tag that never expires, for one (user, recipient) pair (seed 003, "Envelope-dependent recipients").

    `fixed_id` names the store's fixed-tag row; revoking the row revokes the tag. The recipient is
    not part of the MAC, so a bounce can be verified without knowing where the message went.
    """
    if not 0 <= fixed_id <= MAX_FIXED_ID:
        raise SigningError(f"fixed tag id {fixed_id} is outside 0..{MAX_FIXED_ID}")
    body = encode_int(fixed_id, max(1, -(-fixed_id.bit_length() // 5)))
    return _make(parse_mailbox(address), TagKind.FIXED, body, keyring, policy)


def verify(
    address: str,
    keyring: Keyring,
    now: float,
    policy: Policy = DEFAULT_POLICY,
    purpose: Purpose = Purpose.ENVELOPE,
) -> Verdict:
    """Check a possibly signed address; never raises on bad input (design invariant 2).

    The checks run cheapest first, but the MAC is always compared before the time, so that a
    forger learns nothing about timestamps from the reasons given.
    """
    if not isinstance(address, str) or octets(address) > MAX_ADDRESS_OCTETS:
        return Verdict(Reason.TOO_LONG if isinstance(address, str) else Reason.MALFORMED, str(address))
    # A native tag starts with a letter and BATV's with a digit, so `prvs=s...` (user "prvs") is ours.
    if policy.accept_prvs and prvs.is_prvs(address):
        verdict = prvs.verify_prvs(address, keyring, now, max_skew=policy.max_skew)
        if verdict.ok and TagKind.PRVS not in _ACCEPTED_KINDS[purpose]:
            return Verdict(Reason.WRONG_PURPOSE, verdict.address, TagKind.PRVS, verdict.key_id)
        return verdict
    try:
        mailbox = parse_mailbox(address)
    except MalformedAddress:
        return Verdict(Reason.MALFORMED, address)
    if octets(mailbox.local) > MAX_LOCAL_PART_OCTETS:
        return Verdict(Reason.TOO_LONG, address)
    base_local, tag = _split_tag(mailbox.local, policy.separator)
    base = Mailbox(base_local, mailbox.domain)
    if tag is None:
        return Verdict(Reason.UNSIGNED, str(mailbox))
    return _check_tag(base, tag, keyring, now, policy, purpose)


def _check_tag(
    base: Mailbox, tag: str, keyring: Keyring, now: float, policy: Policy, purpose: Purpose
) -> Verdict:
    kind = TagKind(tag[0])
    key_id = _VALUE[tag[1]]
    body, presented_mac = tag[2:-MAC_CHARS], tag[-MAC_CHARS:]
    fields: dict[str, int | None] = {"key_id": key_id}
    if kind is TagKind.FIXED:
        if len(body) > MAX_FIXED_ID_CHARS:
            return Verdict(Reason.MALFORMED, str(base), kind, tag=tag, **fields)
        fields["fixed_id"] = decode_int(body)
    else:
        if len(body) != TIME_CHARS:
            return Verdict(Reason.MALFORMED, str(base), kind, tag=tag, **fields)
        fields["issued"] = decode_int(body) * HOUR
        fields["expires"] = decode_int(body) * HOUR + policy.max_age
    if key_id not in keyring:
        return Verdict(Reason.UNKNOWN_KEY, str(base), kind, tag=tag, **fields)
    expected = _mac(keyring[key_id].secret, tag[:-MAC_CHARS], base)
    if not hmac.compare_digest(expected, presented_mac):
        return Verdict(Reason.BAD_MAC, str(base), kind, tag=tag, **fields)
    if kind not in _ACCEPTED_KINDS[purpose]:
        return Verdict(Reason.WRONG_PURPOSE, str(base), kind, tag=tag, **fields)
    issued, expires = fields.get("issued"), fields.get("expires")
    if issued is not None and issued > now + policy.max_skew:
        return Verdict(Reason.FROM_FUTURE, str(base), kind, tag=tag, **fields)
    if expires is not None and now > expires:
        return Verdict(Reason.EXPIRED, str(base), kind, tag=tag, **fields)
    return Verdict(Reason.VALID, str(base), kind, tag=tag, **fields)
