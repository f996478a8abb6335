"""The bad-input corpus: every classic trick with addresses, and what `decide` answers to it.

Each entry gets a clear refusal, or a safe accept (the address cannot reach a protected user):
never a crash, never an accept of a protected user's forged address, whether the address comes as
the sender of a message or as the recipient of a bounce. The open-relay forms (percent hack, bang
path, source route, quoted or repeated `@`) and text after a CR LF are refused when an MTA could
deliver them to a protected user (`gateway.routing`). A few entries also go through the Postfix
policy adapter over a real socket, raw bytes included.
"""

from __future__ import annotations

import re
import time

import pytest
from service_harness import KEYRING, LineClient, RunningService

from callout import policy_server
from callout.decision import Action, Request, Rules, decide
from gateway.snapshot import Snapshot, SnapshotUser
from gateway.store import Mode
from gateway.store.resolve import Target
from signed_sender import Key, Keyring, Policy, sign, sign_fixed, sign_header

NOW = 1_790_000_000
DAY = 86400
RING = Keyring([Key(1, b"d" * 32)], 1)
RULES = Rules(keyring=RING, policy=Policy())
USERS = {
    1: SnapshotUser(1, "alice", "alice@example.ac.uk", Mode.FULL),
    2: SnapshotUser(2, "bob", "bob@example.ac.uk", Mode.OFF),
    3: SnapshotUser(3, "carol", "carol@example.ac.uk", Mode.TESTING),
    4: SnapshotUser(4, "jorg", "jörg@example.ac.uk", Mode.FULL),
}
DIRECTORY = Snapshot(
    version=1,
    users=USERS,
    owners={u.primary_address: u.id for u in USERS.values()},
    aliases={"webmaster@dept.example.ac.uk": (Target(user_id=1),)},
    fixed_tags={7: 1},
)
ALICE = "alice@example.ac.uk"
ALICE_SIGNED = sign(ALICE, RING, NOW)
ALICE_TAG = ALICE_SIGNED.split("=")[1].split("@")[0]
BOB_TAG = sign("bob@example.ac.uk", RING, NOW).split("=")[1].split("@")[0]

#: address -> the reason it is refused with (alice is in full mode).
REFUSED = {
    # the open-relay forms, leading to alice
    "alice%example.ac.uk@example.ac.uk": "routing_syntax",
    "alice%example.ac.uk%relay.other.org@example.ac.uk": "routing_syntax",
    "example.ac.uk!alice@example.ac.uk": "routing_syntax",
    "@relay.other.org:alice@example.ac.uk": "routing_syntax",
    "@a.other.org,@b.other.org:alice@example.ac.uk": "routing_syntax",
    '"alice@example.ac.uk"@example.ac.uk': "routing_syntax",
    '@relay.other.org:"alice%example.ac.uk"@example.ac.uk': "routing_syntax",
    "alice@example.ac.uk@example.ac.uk": "routing_syntax",
    "alice@example.ac.uk@other.org": "routing_syntax",
    '"alice"@example.ac.uk': "unsigned",  # the same mailbox, quoted
    '"alice=x y"@example.ac.uk': "routing_syntax",  # quoted, with a space: alice's, by the delimiter
    '"alice=\\"x\\" y"@example.ac.uk': "routing_syntax",
    "ALICE@EXAMPLE.AC.UK": "unsigned",
    "webmaster@dept.example.ac.uk": "unsigned",  # a single-target alias of alice
    # injection: what follows a CR or LF is another SMTP command, not part of the address
    "alice@example.ac.uk\r\nRCPT TO:<victim@other.org>": "routing_syntax",
    "alice@example.ac.uk\nDATA": "routing_syntax",
    "alice@example.ac.uk\x00@other.org": "routing_syntax",
    "alice@example.ac.uk SIZE=100": "routing_syntax",
    # overlong and undecodable
    "alice=" + "x" * 300 + "@example.ac.uk": "too_long",
    "alice=" + "s" * 70 + "@example.ac.uk": "too_long",
    "alice=\udcff@example.ac.uk": "malformed",  # an octet that is not UTF-8, as the policy parser keeps it
    "alice=sb\udcffaaaaaaaaaaaaa@example.ac.uk": "malformed",
    # forged, truncated, borrowed and replayed tags
    "alice=sbaaaaaaaaaaaaaa@example.ac.uk": "bad_mac",
    f"alice={ALICE_TAG[:-1]}@example.ac.uk": "malformed",
    f"alice={ALICE_TAG[:-4]}@example.ac.uk": "unsigned",  # too short to be a tag at all
    f"alice={ALICE_TAG}x@example.ac.uk": "malformed",
    f"alice={BOB_TAG}@example.ac.uk": "bad_mac",  # bob's genuine tag on alice's address
    sign(ALICE, RING, NOW - 8 * DAY): "expired",
    sign(ALICE, RING, NOW - 365 * DAY): "expired",
    sign(ALICE, RING, NOW + 2 * DAY): "from_future",
    sign(ALICE, Keyring([Key(1, b"x" * 32)], 1), NOW): "bad_mac",
    sign(ALICE, Keyring([Key(5, b"d" * 32)], 5), NOW): "unknown_key",
    sign_fixed(ALICE, 8, RING): "revoked",
    sign_header(ALICE, RING, NOW): "wrong_purpose",
    # SMTPUTF8: a protected user with a UTF-8 local part
    "jörg@example.ac.uk": "unsigned",
    "JÖRG@example.ac.uk": "unsigned",
}

#: Addresses that cannot reach a protected user: accepted as not protected.
SAFE = [
    "alice%other.org@example.ac.uk",  # percent hack to another site
    "other.org!alice@example.ac.uk",
    "@relay.example.ac.uk:bob@example.ac.uk",  # bob has not opted in
    '"alice@other.org"@example.ac.uk',
    "alice@other.org@example.ac.uk",
    # An IP literal is not one of our domains; which literals are local is the MTA's business
    # (Postfix: only its own interface addresses), and the directory does not list them.
    "alice@[192.0.2.1]",
    "alice@[IPv6:2001:db8::1]",
    "älice@example.ac.uk",
    "x" * 500 + "@example.ac.uk",
    "\udcff\udcfe@example.ac.uk",
    "someone@other.org\r\nRCPT TO:<alice@example.ac.uk>",  # the injected part is never the sender
    "prvs=0123abcdef=stranger@other.org",
    "@",
    "@@@",
    "<<>>",
    "\r\n",
    "%!@:",
]


def judge(address: str, bounce: bool) -> tuple[Action, str]:
    request = Request(sender="", recipient=address, now=NOW) if bounce else Request(sender=address, now=NOW)
    decision = decide(request, DIRECTORY, RULES)
    return decision.action, decision.reason


def test_a_genuinely_signed_sender_still_passes() -> None:
    assert judge(ALICE_SIGNED, bounce=False) == (Action.ACCEPT, "valid")
    assert judge(f'"{ALICE_SIGNED.split("@")[0]}"@example.ac.uk', bounce=True) == (Action.ACCEPT, "valid")


@pytest.mark.parametrize("bounce", [False, True], ids=["sender", "bounce_recipient"])
@pytest.mark.parametrize(("address", "reason"), REFUSED.items(), ids=[repr(a)[:60] for a in REFUSED])
def test_forged_forms_of_a_protected_address_are_refused(address: str, reason: str, bounce: bool) -> None:
    assert judge(address, bounce) == (Action.REJECT, reason)


@pytest.mark.parametrize("bounce", [False, True], ids=["sender", "bounce_recipient"])
@pytest.mark.parametrize("address", SAFE, ids=[repr(a)[:60] for a in SAFE])
def test_forms_that_cannot_reach_a_protected_user_are_accepted(address: str, bounce: bool) -> None:
    assert judge(address, bounce) == (Action.ACCEPT, "not_protected")


@pytest.mark.parametrize("address", [re.sub("alice", "carol", a, flags=re.I) for a in REFUSED if "alice" in a.lower()])
def test_in_testing_mode_the_same_forms_warn_and_never_pass_silently(address: str) -> None:
    assert judge(address, bounce=False)[0] is Action.WARN


# --- through the policy adapter, over a real socket ------------------------------------------------


@pytest.fixture
def policy(running_service: RunningService) -> LineClient:
    running_service.store.add_user("alice", ALICE, mode=Mode.FULL)
    running_service.call(running_service.service.refresh())
    port = running_service.listen("policy", policy_server.session_factory(running_service.service))
    client = LineClient(port)
    yield client
    client.close()


def ask(client: LineClient, sender: bytes, recipient: bytes = b"x@other.org") -> str:
    client.send(b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=" + sender)
    client.send(b"\nrecipient=" + recipient + b"\n\n")
    reply = client.read_until(b"\n\n").decode()
    assert reply.startswith("action=") and "\n" not in reply and "\r" not in reply
    return reply.removeprefix("action=")


@pytest.mark.parametrize(
    "sender",
    [
        b"alice%example.ac.uk@example.ac.uk",
        b"@relay.other.org:alice@example.ac.uk",
        b'"alice@example.ac.uk"@example.ac.uk',
        b"alice@example.ac.uk\rRCPT TO:<x@other.org>",  # a lone CR stays in the value
        b"alice=\xff\xfe@example.ac.uk",  # not UTF-8
        b"alice=sbaaaaaaaaaaaaaa@example.ac.uk",
    ],
)
def test_the_policy_adapter_refuses_forged_forms_in_one_clean_reply_line(policy: LineClient, sender: bytes) -> None:
    assert ask(policy, sender).startswith("550 5.7.1 alice@example.ac.uk is protected against forgery")


def test_the_policy_adapter_accepts_a_signed_sender_after_the_bad_ones(policy: LineClient) -> None:
    ask(policy, b"alice%example.ac.uk@example.ac.uk")
    assert ask(policy, sign(ALICE, KEYRING, time.time()).encode()) == "DUNNO"


def test_an_overlong_policy_line_closes_the_connection_without_an_answer(policy: LineClient) -> None:
    policy.send(b"request=smtpd_access_policy\nsender=alice" + b"x" * 10_000 + b"@example.ac.uk\n\n")
    assert policy.closed_by_server()
