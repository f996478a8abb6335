"""Signing and verifying agree on who is protected (`decision.sender_owner` against `decide`).

The sign maps use a lean lookup instead of a whole decision (issue 7); these properties keep the
two from drifting apart: whoever `decide` would demand a tag of gets one, nobody else does, and
every tag made verifies.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from callout.decision import ROUTING_SYNTAX, Action, Request, Role, Rules, decide, sender_owner
from gateway.snapshot import Snapshot, SnapshotUser
from gateway.store.records import Mode
from gateway.store.resolve import Target
from signed_sender import Key, Keyring, Policy, SigningError, sign

NOW = 1_790_000_000
RING = Keyring([Key(1, b"d" * 32)], 1)
RULES = Rules(keyring=RING, policy=Policy(), delimiters="+=")
USERS = {
    1: SnapshotUser(1, "alice", "alice@example.ac.uk", Mode.FULL),
    2: SnapshotUser(2, "bob", "bob@example.ac.uk", Mode.OFF),
    3: SnapshotUser(3, "carol", "carol@example.ac.uk", Mode.TESTING),
}
SNAPSHOT = Snapshot(
    version=1,
    users=USERS,
    owners={
        **{u.primary_address: u.id for u in USERS.values()},
        "a.smith@example.ac.uk": 1,
        "postmaster@example.ac.uk": 1,  # a bounce-like sender: never checked, so never signed
    },
    aliases={
        "webmaster@dept.example.ac.uk": (Target(user_id=1),),
        "info@college.example.ac.uk": (Target(address="webmaster@dept.example.ac.uk"),),
        "team@dept.example.ac.uk": (Target(user_id=1), Target(address="x@elsewhere.org")),
        "helpdesk@example.ac.uk": (Target(user_id=2),),
    },
)

LOCALS = st.sampled_from(
    [
        "alice",
        "Alice",
        "bob",
        "carol",
        "a.smith",
        "webmaster",
        "info",
        "team",
        "helpdesk",
        "nobody",
        "postmaster",
        "mailer-daemon",
        "double-bounce",
        "alice+lists",
        "carol=x",
        '"alice"',
        "alice%other.org",
        "other.org!alice",
    ]
)
DOMAINS = st.sampled_from(
    ["example.ac.uk", "EXAMPLE.ac.uk", "dept.example.ac.uk", "college.example.ac.uk", "other.org"]
)
ADDRESSES = st.builds(lambda local, domain: f"{local}@{domain}", LOCALS, DOMAINS) | st.text(max_size=40)


@settings(max_examples=400, deadline=None)
@given(ADDRESSES)
def test_the_sign_lookup_protects_exactly_whom_decide_protects(address: str) -> None:
    decision = decide(Request(sender=address, now=NOW), SNAPSHOT, RULES)
    expected = (
        decision.role is Role.SENDER
        and decision.mode in (Mode.TESTING, Mode.FULL)
        and decision.reason != ROUTING_SYNTAX  # never signed: decide refuses it even with a tag
    )
    owner = sender_owner(address, SNAPSHOT, RULES)
    assert (owner is not None) == expected, decision
    if owner is not None:
        assert owner.login == decision.login


@settings(max_examples=200, deadline=None)
@given(ADDRESSES)
def test_every_tag_the_sign_lookup_asks_for_verifies(address: str) -> None:
    if sender_owner(address, SNAPSHOT, RULES) is None:
        return
    try:
        signed = sign(address, RING, NOW, RULES.policy)
    except SigningError:
        return  # refused, never an address that would fail (signed_sender's own tests)
    assert decide(Request(sender=signed, now=NOW), SNAPSHOT, RULES).action is Action.ACCEPT
