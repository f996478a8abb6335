"""BATV `prvs=` addresses, byte-compatible with Exim's `${prvs}` and `${prvscheck}`.

Format (draft-levine-smtp-batv section 4.1, as Exim implements it):

    prvs=KDDDSSSSSS=local@domain

K is the key number (one decimal digit), DDD the low three digits of the *expiry* day (days since
1970, signing day + 7), SSSSSS the first three bytes, in lowercase hex, of
HMAC-SHA1(secret, K DDD local@domain), computed over the address exactly as it was given.

We sign exactly as Exim does, and verify more strictly (design, "Known pitfalls"): the day is
compared by unsigned subtraction modulo 1000, so a tag does not become valid again years later,
hex is accepted in either case, and the MAC is tried over the address as given and lowercased,
because Exim lowercases `$local_part` in ACLs.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from .address import MAX_ADDRESS_OCTETS, MAX_LOCAL_PART_OCTETS, octets, parse_mailbox
from .errors import KeyringError, MalformedAddress, SignedTooLong
from .keys import Keyring
from .verdict import Reason, TagKind, Verdict

DAY = 86400
VALID_DAYS = 7  # Exim signs with the expiry day set 7 days ahead
_PRVS = re.compile(r"prvs=([0-9])([0-9]{3})([0-9a-f]{6})=(.+)", re.IGNORECASE | re.ASCII)


def is_prvs(address: str) -> bool:
    """True if the address has BATV prvs= syntax (its tag may still be invalid)."""
    return _PRVS.fullmatch(address) is not None


def _hmac6(secret: bytes, key_num: int, daystamp: str, address: str) -> str:
    message = f"{key_num}{daystamp}{address}".encode("utf-8", "surrogatepass")
    return hmac.new(secret, message, hashlib.sha1).hexdigest()[:6]


def sign_prvs(address: str, keyring: Keyring, now: float, key_id: int | None = None) -> str:
    """What Exim's `${prvs{address}{secret}{keynum}}` expands to at time `now`."""
    key = keyring.current if key_id is None else keyring[key_id]
    if key.id > 9:
        raise KeyringError(f"BATV key numbers are one digit; key {key.id} cannot sign prvs= addresses")
    mailbox = parse_mailbox(address)
    if mailbox.local.lower().startswith("prvs="):
        raise MalformedAddress(f"{address} is already a prvs= address")
    daystamp = f"{(int(now) // DAY + VALID_DAYS) % 1000:03d}"
    signed = f"prvs={key.id}{daystamp}{_hmac6(key.secret, key.id, daystamp, address)}={address}"
    # Design invariant 2: refuse rather than emit an address no MTA (nor our verify) would take.
    # Exim does not check this; for every address it can use, the output is the same as Exim's.
    local = signed.rpartition("@")[0]
    if octets(local) > MAX_LOCAL_PART_OCTETS or octets(signed) > MAX_ADDRESS_OCTETS:
        raise SignedTooLong(
            f"{address} cannot be signed as prvs=: the signed address would exceed "
            f"{MAX_LOCAL_PART_OCTETS} octets of local part or {MAX_ADDRESS_OCTETS} in all"
        )
    return signed


def verify_prvs(address: str, keyring: Keyring, now: float, max_skew: int = 3600) -> Verdict:
    """Check a prvs= address; the Verdict's `address` is the original sender without the tag."""
    match = _PRVS.fullmatch(address)
    if match is None:
        return Verdict(Reason.MALFORMED, address, TagKind.PRVS)
    key_num, daystamp, presented, original = int(match[1]), match[2], match[3].lower(), match[4]
    tag = f"prvs={key_num}{daystamp}{presented}".lower()
    try:
        parse_mailbox(original)
    except MalformedAddress:
        return Verdict(Reason.MALFORMED, original, TagKind.PRVS, key_num, tag=tag)
    today = int(now) // DAY
    ahead = (int(daystamp) - today) % 1000  # days until expiry, modulo the 1000-day wrap
    # Three digits cannot tell an old tag from a future one; a legitimate tag is at most
    # 7 days (8, from a signer past midnight) ahead, so anything further ahead is old.
    expiry_day = today + ahead if ahead <= VALID_DAYS + 1 else today + ahead - 1000
    fields = {"key_id": key_num, "issued": (expiry_day - VALID_DAYS) * DAY, "expires": (expiry_day + 1) * DAY}
    if key_num not in keyring:
        return Verdict(Reason.UNKNOWN_KEY, original, TagKind.PRVS, tag=tag, **fields)
    secret = keyring[key_num].secret
    candidates = {original, original.lower()}
    if not any(hmac.compare_digest(_hmac6(secret, key_num, daystamp, a), presented) for a in candidates):
        return Verdict(Reason.BAD_MAC, original, TagKind.PRVS, tag=tag, **fields)
    latest_day = (int(now) + max_skew) // DAY  # a signer slightly ahead of us may be past midnight
    if expiry_day < today:
        return Verdict(Reason.EXPIRED, original, TagKind.PRVS, tag=tag, **fields)
    if expiry_day - VALID_DAYS > latest_day:
        return Verdict(Reason.FROM_FUTURE, original, TagKind.PRVS, tag=tag, **fields)
    return Verdict(Reason.VALID, original, TagKind.PRVS, tag=tag, **fields)
