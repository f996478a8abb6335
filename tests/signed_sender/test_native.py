"""Behaviour of native signed addresses: sign, verify, every refusal reason, and rotation."""

from __future__ import annotations

import base64
import hmac
import string

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from signed_sender import (
    AlreadyTagged,
    Key,
    Keyring,
    KeyringError,
    MalformedAddress,
    Policy,
    Purpose,
    Reason,
    SignedTooLong,
    TagKind,
    native,
    sign,
    sign_fixed,
    sign_header,
    verify,
)
from signed_sender.address import Mailbox
from signed_sender.native import ALPHABET

NOW = 1_790_000_000  # 2026-09-21T...Z
SECRET = b"k" * 32
RING = Keyring([Key(0, SECRET)], 0)
DAY = 86400

local_parts = st.text(
    alphabet=string.ascii_letters + string.digits + "!#$%&'*/?^_`{|}~", min_size=1, max_size=40
).filter(lambda s: "=" not in s)
domains = st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z][a-z0-9]{0,10}){1,3}", fullmatch=True)
addresses = st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains)


def tag_of(signed: str) -> str:
    return signed.split("@")[0].rsplit("=", 1)[1]


@given(addresses, st.integers(min_value=0, max_value=2**20 * 3600 - 1 - 8 * DAY))
def test_signed_address_verifies_and_names_the_original(address: str, now: int) -> None:
    signed = sign(address, RING, now)
    verdict = verify(signed, RING, now)
    assert verdict.ok
    assert verdict.address == address
    assert verdict.kind is TagKind.ENVELOPE


@given(addresses)
def test_upper_casing_the_whole_signed_address_still_verifies(address: str) -> None:
    signed = sign(address, RING, NOW)
    assert verify(signed.upper(), RING, NOW).ok


@given(addresses, st.data())
def test_any_single_character_change_to_the_tag_fails(address: str, data: st.DataObject) -> None:
    signed = sign(address, RING, NOW)
    tag = tag_of(signed)
    position = data.draw(st.integers(min_value=0, max_value=len(tag) - 1))
    replacement = data.draw(st.sampled_from(ALPHABET))
    assume(replacement != tag[position])
    forged_tag = tag[:position] + replacement + tag[position + 1 :]
    forged = signed.replace(f"={tag}@", f"={forged_tag}@")
    assert not verify(forged, RING, NOW).ok


@given(addresses, st.data())
def test_a_tag_moved_to_another_address_fails(address: str, data: st.DataObject) -> None:
    other = data.draw(addresses)
    assume(other.lower() != address.lower())
    tag = tag_of(sign(address, RING, NOW))
    local, domain = other.rsplit("@", 1)
    assert verify(f"{local}={tag}@{domain}", RING, NOW).reason is Reason.BAD_MAC


def test_expiry_boundary_is_max_age_after_the_tag_timestamp() -> None:
    policy = Policy(max_age=7 * DAY)
    signed = sign("alice@example.ac.uk", RING, NOW, policy)
    issued = verify(signed, RING, NOW).issued
    assert issued is not None and issued <= NOW < issued + 3600
    assert verify(signed, RING, issued + 7 * DAY, policy).ok
    assert verify(signed, RING, issued + 7 * DAY + 1, policy).reason is Reason.EXPIRED


def test_future_skew_boundary() -> None:
    policy = Policy(max_skew=3600)
    signed = sign("alice@example.ac.uk", RING, NOW, policy)
    issued = verify(signed, RING, NOW).issued
    assert issued is not None
    assert verify(signed, RING, issued - 3600, policy).ok
    assert verify(signed, RING, issued - 3601, policy).reason is Reason.FROM_FUTURE


def test_unsigned_address_is_reported_unsigned_with_the_address() -> None:
    verdict = verify("Alice@Example.ac.uk", RING, NOW)
    assert verdict.reason is Reason.UNSIGNED and verdict.address == "Alice@Example.ac.uk"
    assert not verdict.signed


def test_separator_with_a_non_tag_suffix_is_unsigned() -> None:
    assert verify("alice=news@example.ac.uk", RING, NOW).reason is Reason.UNSIGNED


def test_truncated_tag_is_malformed_not_unsigned() -> None:
    signed = sign("alice@example.ac.uk", RING, NOW)
    local, domain = signed.split("@")
    verdict = verify(f"{local[:-1]}@{domain}", RING, NOW)
    assert verdict.reason is Reason.MALFORMED
    assert verdict.address == "alice@example.ac.uk"


@pytest.mark.parametrize(
    "address", ["", "alice", "@example.ac.uk", "alice@", "a@b@example.ac.uk", "al ice@x.org", "a\r\nb@x.org"]
)
def test_unparseable_addresses_are_malformed(address: str) -> None:
    assert verify(address, RING, NOW).reason is Reason.MALFORMED
    with pytest.raises(MalformedAddress):
        sign(address, RING, NOW)


def test_quoted_local_part_equal_to_an_atom_is_the_same_mailbox() -> None:
    signed = sign('"alice"@example.ac.uk', RING, NOW)
    assert signed.startswith("alice=")
    assert verify(signed, RING, NOW).ok


def test_quoted_local_part_needing_quotes_is_refused() -> None:
    with pytest.raises(MalformedAddress):
        sign('"al@ice"@example.ac.uk', RING, NOW)


def test_signed_local_part_over_64_octets_is_refused_not_truncated() -> None:
    longest = "a" * (64 - 17)
    assert len(sign(f"{longest}@example.ac.uk", RING, NOW).split("@")[0]) == 64
    with pytest.raises(SignedTooLong, match="up to 47 octets"):
        sign(f"{longest}b@example.ac.uk", RING, NOW)


def test_utf8_local_part_counts_octets_not_characters() -> None:
    local = "é" * 23  # 46 octets; signed would be 63
    assert verify(sign(f"{local}@example.ac.uk", RING, NOW), RING, NOW).ok
    with pytest.raises(SignedTooLong):
        sign(f"{local}é@example.ac.uk", RING, NOW)


def test_presented_local_part_over_64_octets_is_too_long() -> None:
    assert verify("a" * 65 + "@example.ac.uk", RING, NOW).reason is Reason.TOO_LONG
    assert verify("a@" + "b" * 260 + ".org", RING, NOW).reason is Reason.TOO_LONG


@pytest.mark.parametrize(
    "address", ["prvs=1234abcdef=alice@example.ac.uk", "SRS0=HHH=TT=other.org=bob@example.ac.uk"]
)
def test_already_tagged_senders_are_never_signed_again(address: str) -> None:
    with pytest.raises(AlreadyTagged):
        sign(address, RING, NOW)


def test_our_own_tag_is_never_signed_twice() -> None:
    with pytest.raises(AlreadyTagged):
        sign(sign("alice@example.ac.uk", RING, NOW), RING, NOW)


def test_rotation_old_keys_verify_only_the_current_signs() -> None:
    rotated = RING.rotated(b"n" * 32, created=NOW)
    assert rotated.current.id == 1
    old = sign("alice@example.ac.uk", RING, NOW)
    new = sign("alice@example.ac.uk", rotated, NOW)
    assert verify(old, rotated, NOW).ok and verify(new, rotated, NOW).ok
    assert verify(new, rotated, NOW).key_id == 1
    assert verify(new, RING, NOW).reason is Reason.UNKNOWN_KEY
    assert verify(old, rotated.without(0), NOW).reason is Reason.UNKNOWN_KEY


def test_rotation_reuses_ids_round_robin_after_32_keys() -> None:
    ring = RING
    for i in range(40):
        ring = ring.rotated(bytes([i]) * 32, created=NOW + i)
    assert len(ring) == 32
    assert ring.current.id == 40 % 32


def test_keyring_refuses_short_secrets_and_never_shows_them() -> None:
    with pytest.raises(KeyringError):
        Key(0, b"short")
    assert "kkkk" not in repr(RING[0]) and "kkkk" not in repr(RING)


def test_current_key_cannot_be_retired() -> None:
    with pytest.raises(KeyringError):
        RING.without(0)


def test_fixed_tag_is_stable_across_days_and_carries_its_id() -> None:
    fixed = sign_fixed("alice@example.ac.uk", 4242, RING)
    later = verify(fixed, RING, NOW + 400 * DAY)
    assert later.ok and later.kind is TagKind.FIXED and later.fixed_id == 4242
    assert sign_fixed("alice@example.ac.uk", 4242, RING) == fixed


def test_fixed_tag_of_another_id_or_user_fails() -> None:
    fixed = sign_fixed("alice@example.ac.uk", 1, RING)
    assert verify(fixed.replace("alice", "bob"), RING, NOW).reason is Reason.BAD_MAC
    other = sign_fixed("alice@example.ac.uk", 2, RING)
    mixed = fixed.split("=")[0] + "=" + tag_of(fixed)[:3] + tag_of(other)[3:] + "@example.ac.uk"
    assert not verify(mixed, RING, NOW).ok


def test_header_token_is_refused_as_envelope_sender() -> None:
    token = sign_header("alice@example.ac.uk", RING, NOW)
    assert verify(token, RING, NOW).reason is Reason.WRONG_PURPOSE
    assert verify(token, RING, NOW, purpose=Purpose.HEADER).ok


def test_envelope_tag_is_refused_as_header_token() -> None:
    signed = sign("alice@example.ac.uk", RING, NOW)
    assert verify(signed, RING, NOW, purpose=Purpose.HEADER).reason is Reason.WRONG_PURPOSE


def test_marker_swap_from_header_to_envelope_breaks_the_mac() -> None:
    token = sign_header("alice@example.ac.uk", RING, NOW)
    assert verify(token.replace("=h", "=s"), RING, NOW).reason is Reason.BAD_MAC


@pytest.mark.parametrize("separator", ["+", "-", "_"])
def test_configurable_separator(separator: str) -> None:
    policy = Policy(separator=separator)
    signed = sign("alice@example.ac.uk", RING, NOW, policy)
    assert f"alice{separator}s" in signed
    assert verify(signed, RING, NOW, policy).ok
    assert verify(signed, RING, NOW).reason is Reason.UNSIGNED


def test_separator_must_be_one_of_the_safe_set() -> None:
    with pytest.raises(ValueError):
        Policy(separator="@")


def test_user_named_prvs_is_signed_natively_and_not_mistaken_for_batv() -> None:
    signed = sign("PRVS@example.ac.uk", RING, NOW)
    assert verify(signed, RING, NOW).ok


def test_signed_form_is_one_key_for_every_spelling_of_a_tag() -> None:
    signed = sign("Alice@Example.ac.uk", RING, NOW)
    quoted = '"' + signed.split("@")[0] + '"@' + signed.split("@")[1]
    forms = {verify(s, RING, NOW).signed_form("=") for s in (signed, signed.upper(), quoted)}
    assert forms == {signed.lower()}
    assert verify("alice@example.ac.uk", RING, NOW).signed_form("=") is None


def test_strip_tag_needs_no_key_and_leaves_other_suffixes() -> None:
    from signed_sender import sign_prvs, strip_tag

    assert strip_tag(sign("Alice@Example.ac.uk", RING, NOW)) == "Alice@Example.ac.uk"
    assert strip_tag(sign_prvs("alice@example.ac.uk", Keyring([Key(3, b"p" * 32)], 3), NOW)) == "alice@example.ac.uk"
    assert strip_tag("alice=news@example.ac.uk") == "alice=news@example.ac.uk"
    with pytest.raises(MalformedAddress):
        strip_tag("not an address")


@given(st.binary(min_size=16, max_size=64), st.text(ALPHABET, min_size=3, max_size=12), st.text(min_size=1))
def test_the_mac_is_the_first_fifty_bits_of_an_hmac_sha256_in_base32(secret: bytes, head: str, local: str) -> None:
    """The table-driven encoding against the standard codec it replaced."""
    assume("@" not in local)
    mailbox = Mailbox(local, "example.ac.uk")
    message = f"{head}:{mailbox.lower()}".encode("utf-8", "surrogatepass")
    digest = hmac.digest(secret, message, "sha256")
    expected = base64.b32encode(digest[:7]).decode().lower()[: native.MAC_CHARS]
    assert native._mac(secret, head, mailbox) == expected
