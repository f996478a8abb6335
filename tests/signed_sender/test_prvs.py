"""BATV prvs= codec: Exim's format, verified more strictly than Exim verifies it."""

from __future__ import annotations

import hashlib
import hmac
import re

import pytest

from signed_sender import Key, Keyring, KeyringError, Reason, TagKind, sign_prvs, verify, verify_prvs

DAY = 86400
RING = Keyring([Key(3, b"exim-batv-secret-1234")], 3)


def day_start(day_number: int) -> int:
    return day_number * DAY + 100


def test_sign_has_exims_shape_key_expiry_day_and_lowercase_hex() -> None:
    now = day_start(20_351)
    signed = sign_prvs("Alice@Example.ac.uk", RING, now)
    match = re.fullmatch(r"prvs=(\d)(\d{3})([0-9a-f]{6})=Alice@Example.ac.uk", signed)
    assert match is not None
    assert match[1] == "3" and match[2] == f"{(20_351 + 7) % 1000:03d}"
    expected = hmac.new(RING[3].secret, f"3{match[2]}Alice@Example.ac.uk".encode(), hashlib.sha1)
    assert match[3] == expected.hexdigest()[:6]


def test_valid_for_seven_days_then_expired() -> None:
    signed = sign_prvs("alice@example.ac.uk", RING, day_start(20_351))
    assert verify_prvs(signed, RING, day_start(20_351 + 7) + DAY - 101).ok
    assert verify_prvs(signed, RING, day_start(20_351 + 8)).reason is Reason.EXPIRED


def test_expiry_is_correct_across_the_1000_day_wrap() -> None:
    signed = sign_prvs("alice@example.ac.uk", RING, day_start(20_996))  # expiry day ...003
    assert "=3003" in signed
    assert verify_prvs(signed, RING, day_start(20_999)).ok
    assert verify_prvs(signed, RING, day_start(21_004)).reason is Reason.EXPIRED


def test_long_expired_tag_is_not_accepted_again_within_the_cycle() -> None:
    # Exim's own check (E >= T, with T set to 0 when E < 7 and T >= 993) accepts expiry day 997
    # again for about 780 days after day ...000; we refuse it.
    signed = sign_prvs("alice@example.ac.uk", RING, day_start(20_990))  # expiry day ...997
    for later in (20_998, 21_001, 21_100, 21_400, 21_900):
        assert verify_prvs(signed, RING, day_start(later)).reason is Reason.EXPIRED, later


def test_tag_from_tomorrow_is_from_the_future_unless_within_skew() -> None:
    signed = sign_prvs("alice@example.ac.uk", RING, day_start(20_352))
    assert verify_prvs(signed, RING, day_start(20_351), max_skew=3600).reason is Reason.FROM_FUTURE
    just_before_midnight = day_start(20_352) - 100 - 600
    assert verify_prvs(signed, RING, just_before_midnight, max_skew=3600).ok


def test_hex_in_either_case_and_lowercased_address_verify() -> None:
    signed = sign_prvs("Alice@Example.ac.uk", RING, day_start(20_351))
    assert verify_prvs(signed.upper(), RING, day_start(20_351)).reason is Reason.BAD_MAC
    assert verify_prvs(signed.replace("prvs=", "PRVS="), RING, day_start(20_351)).ok
    lowered = sign_prvs("alice@example.ac.uk", RING, day_start(20_351))
    assert verify_prvs(lowered.upper(), RING, day_start(20_351)).ok


def test_bad_mac_unknown_key_and_malformed() -> None:
    signed = sign_prvs("alice@example.ac.uk", RING, day_start(20_351))
    assert verify_prvs(signed.replace("alice", "bob"), RING, day_start(20_351)).reason is Reason.BAD_MAC
    assert verify_prvs("prvs=4" + signed[6:], RING, day_start(20_351)).reason is Reason.UNKNOWN_KEY
    assert verify_prvs("prvs=3123zzzzzz=a@b.org", RING, 0).reason is Reason.MALFORMED
    assert verify_prvs("prvs=3123abcdef=a b@b.org", RING, 0).reason is Reason.MALFORMED


def test_general_verify_dispatches_prvs_and_strips_the_tag() -> None:
    signed = sign_prvs("alice@example.ac.uk", RING, day_start(20_351))
    verdict = verify(signed, RING, day_start(20_351))
    assert verdict.ok and verdict.kind is TagKind.PRVS and verdict.address == "alice@example.ac.uk"


def test_key_ids_above_nine_cannot_sign_prvs() -> None:
    ring = Keyring([Key(12, b"x" * 32)], 12)
    with pytest.raises(KeyringError):
        sign_prvs("alice@example.ac.uk", ring, 0)
