"""The decision core, decided without sockets: who is checked, and what each mode answers."""

from __future__ import annotations

import pytest

from callout.decision import Action, Request, Role, Rules, decide, unavailable
from gateway.snapshot import Snapshot, SnapshotUser
from gateway.store.records import EventKind, Mode
from gateway.store.resolve import Target
from signed_sender import Key, Keyring, Policy, sign, sign_fixed, sign_header, sign_prvs

NOW = 1_790_000_000
RING = Keyring([Key(1, b"d" * 32)], 1)
RULES = Rules(keyring=RING, policy=Policy())


def snapshot(**modes: Mode) -> Snapshot:
    users = {
        i: SnapshotUser(i, login, f"{login}@example.ac.uk", mode) for i, (login, mode) in enumerate(modes.items(), 1)
    }
    ids = {u.login: u.id for u in users.values()}
    owners = {u.primary_address: u.id for u in users.values()}
    owners["a.smith@example.ac.uk"] = ids.get("alice", 0)
    aliases = {
        "webmaster@dept.example.ac.uk": (Target(user_id=ids.get("alice")),),
        "info@college.example.ac.uk": (Target(address="webmaster@dept.example.ac.uk"),),
        "team@dept.example.ac.uk": (Target(user_id=ids.get("alice")), Target(address="x@elsewhere.org")),
    }
    return Snapshot(version=1, users=users, owners=owners, aliases=aliases, fixed_tags={7: ids.get("alice", 0)})


FULL = snapshot(alice=Mode.FULL, bob=Mode.OFF, carol=Mode.TESTING)


def mail(sender: str, recipient: str = "someone@other.org", now: float = NOW) -> Request:
    return Request(sender=sender, recipient=recipient, now=now)


def test_forged_sender_of_opted_in_user_is_rejected_with_reason_and_fix() -> None:
    decision = decide(mail("alice@example.ac.uk"), FULL, RULES)
    assert (decision.action, decision.code, decision.enhanced) == (Action.REJECT, 550, "5.7.1")
    assert decision.reason == "unsigned" and decision.role is Role.SENDER and decision.login == "alice"
    assert "alice@example.ac.uk is protected" in decision.text and "submission" in decision.text
    assert decision.event is EventKind.REJECT


def test_signed_sender_is_accepted() -> None:
    decision = decide(mail(sign("alice@example.ac.uk", RING, NOW)), FULL, RULES)
    assert decision.action is Action.ACCEPT and decision.reason == "valid"


def test_upper_cased_signed_sender_is_accepted() -> None:
    assert decide(mail(sign("alice@example.ac.uk", RING, NOW).upper()), FULL, RULES).action is Action.ACCEPT


@pytest.mark.parametrize(
    ("sender", "reason"),
    [
        (sign("alice@example.ac.uk", RING, NOW - 8 * 86400), "expired"),
        (sign("alice@example.ac.uk", RING, NOW + 86400), "from_future"),
        (sign("alice@example.ac.uk", Keyring([Key(2, b"x" * 32)], 2), NOW), "unknown_key"),
        (sign("alice@example.ac.uk", Keyring([Key(1, b"x" * 32)], 1), NOW), "bad_mac"),
        (sign_header("alice@example.ac.uk", RING, NOW), "wrong_purpose"),
        ("alice=junk@example.ac.uk", "unsigned"),
    ],
)
def test_every_bad_tag_is_rejected_with_its_reason(sender: str, reason: str) -> None:
    decision = decide(mail(sender), FULL, RULES)
    assert decision.action is Action.REJECT and decision.reason == reason


def test_not_opted_in_and_unknown_senders_are_accepted() -> None:
    for sender in ("bob@example.ac.uk", "stranger@example.ac.uk", "someone@other.org"):
        decision = decide(mail(sender), FULL, RULES)
        assert decision.action is Action.ACCEPT and decision.reason == "not_protected"


def test_testing_mode_warns_with_a_header_instead_of_rejecting() -> None:
    decision = decide(mail("carol@example.ac.uk"), FULL, RULES)
    assert decision.action is Action.WARN and decision.event is EventKind.WARN
    assert decision.header == "X-Antiforgery-Warning: sender carol@example.ac.uk failed the forgery check (unsigned)"


def test_bounce_recipient_is_checked_and_collateral_spam_refused() -> None:
    decision = decide(mail("", "alice@example.ac.uk"), FULL, RULES)
    assert decision.action is Action.REJECT and decision.role is Role.BOUNCE_RECIPIENT
    assert "collateral spam" in decision.text
    ok = decide(mail("", sign("alice@example.ac.uk", RING, NOW)), FULL, RULES)
    assert ok.action is Action.ACCEPT


def test_null_sender_written_as_angle_brackets_is_a_bounce() -> None:
    assert decide(mail("<>", "alice@example.ac.uk"), FULL, RULES).role is Role.BOUNCE_RECIPIENT


def test_postfix_verification_probe_sender_counts_as_a_bounce() -> None:
    decision = decide(mail("double-bounce@mx.example.ac.uk", "alice@example.ac.uk"), FULL, RULES)
    assert decision.action is Action.REJECT and decision.role is Role.BOUNCE_RECIPIENT


def test_a_time_stamped_postfix_probe_sender_counts_as_a_bounce_too() -> None:
    """Postfix's address_verify_sender_ttl appends a stamp: double-bounceJQZ3@ (callout.probes)."""
    decision = decide(mail("double-bounceJQZ3@mx.example.ac.uk", "alice@example.ac.uk"), FULL, RULES)
    assert decision.action is Action.REJECT and decision.role is Role.BOUNCE_RECIPIENT


def test_recipient_of_normal_mail_is_never_checked() -> None:
    decision = decide(mail("someone@other.org", "alice@example.ac.uk"), FULL, RULES)
    assert decision.action is Action.ACCEPT and decision.checked == "someone@other.org"


def test_extra_address_and_single_target_alias_chain_are_protected_like_the_user() -> None:
    for sender in ("a.smith@example.ac.uk", "webmaster@dept.example.ac.uk", "INFO@college.example.ac.uk"):
        decision = decide(mail(sender), FULL, RULES)
        assert decision.action is Action.REJECT and decision.login == "alice", sender
    signed = sign("info@college.example.ac.uk", RING, NOW)
    assert decide(mail(signed), FULL, RULES).action is Action.ACCEPT


def test_multi_target_alias_is_not_checked_further() -> None:
    decision = decide(mail("team@dept.example.ac.uk"), FULL, RULES)
    assert decision.action is Action.ACCEPT and "multi_target" in decision.text


def test_subaddress_after_a_recipient_delimiter_routes_to_the_user() -> None:
    rules = Rules(keyring=RING, policy=Policy(), delimiters="+=")
    assert decide(mail("alice+lists@example.ac.uk"), FULL, rules).action is Action.REJECT


def test_blacklisted_tag_is_rejected() -> None:
    signed = sign("alice@example.ac.uk", RING, NOW)
    listed = Snapshot(**{**FULL.__dict__, "blacklist": frozenset({signed.lower()})})
    decision = decide(mail(signed.upper()), listed, RULES)
    assert decision.action is Action.REJECT and decision.reason == "blacklisted"


def test_fixed_tag_valid_revoked_and_of_another_user() -> None:
    fixed = sign_fixed("alice@example.ac.uk", 7, RING)
    assert decide(mail(fixed, now=NOW + 900 * 86400), FULL, RULES).action is Action.ACCEPT
    revoked = Snapshot(**{**FULL.__dict__, "fixed_tags": {}})
    assert decide(mail(fixed), revoked, RULES).reason == "revoked"
    carols = sign_fixed("carol@example.ac.uk", 7, RING)
    assert decide(mail(carols), FULL, RULES).reason == "wrong_user"


def test_batv_prvs_sender_of_protected_user_is_accepted() -> None:
    rules = Rules(keyring=Keyring([Key(3, b"p" * 32)], 3), policy=Policy())
    assert decide(mail(sign_prvs("alice@example.ac.uk", rules.keyring, NOW)), FULL, rules).action is Action.ACCEPT


def test_forwarded_mail_verifies_each_time_it_passes() -> None:
    signed = sign("alice@example.ac.uk", RING, NOW)
    first = decide(mail(signed, "bob@example.ac.uk"), FULL, RULES)
    second = decide(mail(signed, "bob@elsewhere.org", now=NOW + 3600), FULL, RULES)
    assert first.action is second.action is Action.ACCEPT


def test_malformed_bounce_is_recorded_not_rejected() -> None:
    decision = decide(mail("MAILER-DAEMON@virus-scanner.example.com", "alice@example.ac.uk"), FULL, RULES)
    assert decision.action is Action.ACCEPT and decision.reason == "malformed_bounce"
    assert decision.event is EventKind.MALFORMED_BOUNCE and decision.login == "alice"
    clean = decide(mail("postmaster@other.org", sign("alice@example.ac.uk", RING, NOW)), FULL, RULES)
    assert clean.event is None


def test_unavailable_is_a_temporary_451() -> None:
    decision = unavailable("directory not loaded")
    assert (decision.action, decision.code, decision.enhanced) == (Action.DEFER, 451, "4.3.0")


def test_garbage_addresses_never_raise() -> None:
    for sender in ("a@b@c", "@@", "x" * 1000, "\x00@example.ac.uk", '"al ice"@example.ac.uk'):
        assert decide(mail(sender), FULL, RULES).action in (Action.ACCEPT, Action.REJECT)
