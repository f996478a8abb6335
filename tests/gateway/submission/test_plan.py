"""Sender authorisation and the once-per-message signing plan, decided without sockets."""

from __future__ import annotations

import pytest

from gateway.signed_cache import SignedCache
from gateway.snapshot import Snapshot, SnapshotUser
from gateway.store.records import Mode
from gateway.store.resolve import Target
from gateway.submission.plan import MessageSigner, check_sender
from signed_sender import Key, Keyring, Policy, SignedTooLong, TagKind, sign, verify

NOW = 1_790_000_000
RING = Keyring([Key(0, b"s" * 32)], 0)
POLICY = Policy()
ALICE = SnapshotUser(1, "alice", "alice@example.ac.uk", Mode.FULL)
BOB = SnapshotUser(2, "bob", "bob@example.ac.uk", Mode.OFF)
DIRECTORY = Snapshot(
    version=1,
    users={1: ALICE, 2: BOB},
    owners={"alice@example.ac.uk": 1, "a.smith@example.ac.uk": 1, "bob@example.ac.uk": 2},
    aliases={
        "webmaster@dept.example.ac.uk": (Target(user_id=1),),
        "office@dept.example.ac.uk": (Target(user_id=1), Target(address="bob@example.ac.uk")),
        "sales@dept.example.ac.uk": (Target(user_id=2), Target(address="x@other.org")),
    },
    fixed_tags={41: 1, 42: 1},
    fixed_recipients={(1, "list@lists.example.org"): 41, (1, "*@ezmlm.example.net"): 42},
    logins={"alice": 1, "bob": 2},
)


@pytest.mark.parametrize(
    "sender",
    [
        "alice@example.ac.uk",
        "Alice@Example.AC.UK",
        "a.smith@example.ac.uk",
        "webmaster@dept.example.ac.uk",
        "office@dept.example.ac.uk",
        "alice=news@example.ac.uk",
        "",
    ],
)
def test_user_may_send_as_own_addresses_aliases_and_shared_role_addresses(sender: str) -> None:
    assert check_sender("alice", sender, DIRECTORY, POLICY).ok


@pytest.mark.parametrize(
    "sender", ["bob@example.ac.uk", "sales@dept.example.ac.uk", "someone@other.org", "nobody@example.ac.uk"]
)
def test_user_may_not_send_as_anyone_else(sender: str) -> None:
    check = check_sender("alice", sender, DIRECTORY, POLICY)
    assert not check.ok and (check.code, check.enhanced) == (553, "5.7.1")
    assert "alice may not send as" in check.text and "alice@example.ac.uk" in check.text


def test_malformed_sender_is_553_5_1_7() -> None:
    check = check_sender("alice", "a b@c", DIRECTORY, POLICY)
    assert (check.code, check.enhanced) == (553, "5.1.7")


def test_unknown_login_is_a_temporary_failure() -> None:
    assert check_sender("carol", "carol@example.ac.uk", DIRECTORY, POLICY).code == 451


def test_one_signature_per_message_for_every_plain_recipient() -> None:
    signer = MessageSigner(ALICE, "alice@example.ac.uk", DIRECTORY, RING, POLICY, NOW)
    senders = {signer.sender_for(r) for r in ("x@other.org", "y@other.org", "Z@OTHER.ORG")}
    assert len(senders) == 1
    verdict = verify(senders.pop(), RING, NOW)
    assert verdict.ok and verdict.kind is TagKind.ENVELOPE and verdict.address == "alice@example.ac.uk"


def test_fixed_tag_recipients_get_their_fixed_sender_exact_before_domain() -> None:
    signer = MessageSigner(ALICE, "alice@example.ac.uk", DIRECTORY, RING, POLICY, NOW)
    assert verify(signer.sender_for("LIST@lists.example.org"), RING, NOW).fixed_id == 41
    assert verify(signer.sender_for("anything@ezmlm.example.net"), RING, NOW).fixed_id == 42
    assert verify(signer.sender_for("other@lists.example.org"), RING, NOW).kind is TagKind.ENVELOPE


def test_users_not_opted_in_and_null_senders_are_unchanged() -> None:
    assert MessageSigner(BOB, "bob@example.ac.uk", DIRECTORY, RING, POLICY, NOW).sender_for("x@y.org") == (
        "bob@example.ac.uk"
    )
    assert MessageSigner(ALICE, "", DIRECTORY, RING, POLICY, NOW).sender_for("x@y.org") == ""


def test_already_signed_sender_is_never_signed_twice() -> None:
    signed = MessageSigner(ALICE, "alice@example.ac.uk", DIRECTORY, RING, POLICY, NOW).default
    assert MessageSigner(ALICE, signed, DIRECTORY, RING, POLICY, NOW).sender_for("x@y.org") == signed


def test_unsignable_sender_refuses_rather_than_leaving_unsigned() -> None:
    with pytest.raises(SignedTooLong):
        MessageSigner(ALICE, "a" * 50 + "@example.ac.uk", DIRECTORY, RING, POLICY, NOW)


def test_signed_senders_hand_out_exactly_what_signing_gives() -> None:
    """Once an hour per sender instead of once a message (issue 7), with the same result."""
    cache, other = SignedCache(), Keyring([Key(0, b"s" * 32), Key(1, b"t" * 32)], 1)
    hours = [NOW, NOW + 1, NOW + 3600, NOW + 3601, NOW]
    for now in hours:
        for ring in (RING, other, RING):
            got = cache.sign("alice@example.ac.uk", ring, now, POLICY)
            assert got == sign("alice@example.ac.uk", ring, now, POLICY)
    signer = MessageSigner(ALICE, "alice@example.ac.uk", DIRECTORY, RING, POLICY, NOW, cache)
    assert signer.default == sign("alice@example.ac.uk", RING, NOW, POLICY)
    with pytest.raises(SignedTooLong):  # never cached: refused every time
        cache.sign("a" * 64 + "@example.ac.uk", RING, NOW, POLICY)
    with pytest.raises(SignedTooLong):
        cache.sign("a" * 64 + "@example.ac.uk", RING, NOW, POLICY)
