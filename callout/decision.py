"""The one decision core: is this envelope genuine? (seed 003, "Message relay").

Every adapter (Postfix policy, socketmap, Exim readsocket, SMTP callouts, HTTP) turns its request
into a `Request`, calls `decide`, and turns the `Decision` back into its own protocol. `decide` is
a pure function of the request, the directory snapshot, the keys and the time: a test of a
decision needs no socket and no sleep.

What is checked (design invariant 4): the envelope sender of a normal message; the recipient of
a bounce (null sender, or a probe sender such as Postfix's double-bounce@); never the recipient
of normal mail. An address is protected when it routes, directly or through single-target
aliases, to a user in testing or full mode (invariant 5).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from gateway.routing import routing_targets
from gateway.snapshot import Snapshot, SnapshotUser
from gateway.store.records import EventKind, Mode, ResolutionKind
from gateway.tagcheck import check_address
from signed_sender import Keyring, MalformedAddress, Policy, parse_mailbox

from .probes import is_probe_sender

#: The reason for an address that is not a protected user's but routes to one (`gateway.routing`).
ROUTING_SYNTAX = "routing_syntax"


class Action(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    WARN = "warn"  # testing mode: deliver, with a warning header
    DEFER = "defer"  # internal fault: try again later, never a guess


class Role(enum.Enum):
    SENDER = "sender"  # envelope sender of a normal message
    BOUNCE_RECIPIENT = "bounce_recipient"  # recipient of a bounce: the original sender


@dataclass(frozen=True, slots=True)
class Request:
    sender: str  # "" for the null sender <>
    recipient: str = ""
    now: float = 0.0
    client_address: str | None = None
    protocol_state: str = "RCPT"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    #: Machine-readable: `valid`, `not_protected`, a signed_sender reason, a tagcheck reason,
    #: `routing_syntax`, `malformed_bounce`, `unavailable`.
    reason: str
    #: A sentence for the SMTP reply or the log, naming the address and what to do.
    text: str
    code: int = 250
    enhanced: str = "2.1.0"
    checked: str | None = None
    role: Role | None = None
    login: str | None = None
    user_id: int | None = None
    mode: Mode | None = None
    #: The event to record for the user's statistics, if any.
    event: EventKind | None = None
    #: For WARN: the header line (without CRLF) the MTA should add.
    header: str | None = None


@dataclass(frozen=True)
class Rules:
    """Site settings the decision depends on; built once from the configuration."""

    keyring: Keyring
    policy: Policy
    #: Local parts of senders that stand for "no sender": address-verification probes.
    probe_senders: frozenset[str] = frozenset({"double-bounce"})
    #: Local parts of senders of bounce-like mail that should have used <> (seed 003: broken
    #: auto-responders). Their recipients are checked but never rejected; failures are recorded.
    bounce_like_senders: frozenset[str] = frozenset({"mailer-daemon", "postmaster"})
    #: Characters the MTA treats as recipient delimiters (Postfix recipient_delimiter).
    delimiters: str = "="
    #: Where users must submit, named in every rejection so they can fix their setup.
    submission_service: str = "the authenticated submission service"
    warning_header: str = "X-Antiforgery-Warning"


def unavailable(why: str) -> Decision:
    """The answer when the directory is not loaded or something failed: 451, never a guess."""
    return Decision(Action.DEFER, "unavailable", f"forgery check temporarily unavailable ({why})", 451, "4.3.0")


def _local_part(address: str) -> str:
    return address.rpartition("@")[0].lower()


def _route(snapshot: Snapshot, address: str, delimiters: str) -> tuple[ResolutionKind, SnapshotUser | None]:
    """Route like the MTA: the address itself, else with any suffix after a delimiter removed."""
    route = snapshot.route(address)
    local, _, domain = address.rpartition("@")
    if route.kind is ResolutionKind.UNKNOWN and delimiters:
        cut = min((i for i in (local.find(d) for d in delimiters) if i > 0), default=-1)
        if cut > 0:
            route = snapshot.route(f"{local[:cut]}@{domain}")
    return route.kind, snapshot.user(route.user_id)


def sender_owner(sender: str, snapshot: Snapshot, rules: Rules) -> SnapshotUser | None:
    """The user in testing or full mode whose tag `sender` must carry, or None: what `decide` protects.

    The same routing `decide` applies to a sender (aliases, recipient delimiters; probe and
    bounce-like senders are not checked as senders), without building a Decision: signing asks
    only this (`callout.signing`). An address with routing syntax is not a user's and gets None,
    so no tag is ever made for one (decide refuses it as `routing_syntax`).
    """
    local = _local_part(sender)
    if not local or is_probe_sender(local, rules.probe_senders) or local in rules.bounce_like_senders:
        return None
    try:
        mailbox = parse_mailbox(sender)
        sender = f"{mailbox.local}@{mailbox.domain}"  # as verify() names an unsigned address
    except MalformedAddress:
        pass
    _kind, user = _route(snapshot, sender, rules.delimiters)
    return user if user is not None and user.mode is not Mode.OFF else None


def decide(request: Request, snapshot: Snapshot, rules: Rules) -> Decision:
    sender = request.sender.strip().removeprefix("<").removesuffix(">")
    sender_local = _local_part(sender)
    if not sender or is_probe_sender(sender_local, rules.probe_senders):
        role, address = Role.BOUNCE_RECIPIENT, request.recipient.strip().removeprefix("<").removesuffix(">")
    elif sender_local in rules.bounce_like_senders:
        return _malformed_bounce(request, snapshot, rules, sender)
    else:
        role, address = Role.SENDER, sender
    if not address:
        return Decision(Action.ACCEPT, "not_protected", "no address to check", checked=address, role=role)
    return _judge(address, role, request.now, snapshot, rules)


def _protected_target(address: str, snapshot: Snapshot, rules: Rules) -> SnapshotUser | None:
    """The protected user that routing syntax in `address` could deliver to (`gateway.routing`)."""
    for target in routing_targets(address):
        _kind, user = _route(snapshot, target, rules.delimiters)
        if user is not None and user.mode is not Mode.OFF:
            return user
    return None


def _judge(address: str, role: Role, now: float, snapshot: Snapshot, rules: Rules) -> Decision:
    result = check_address(address, rules.keyring, now, rules.policy, snapshot)
    kind, user = _route(snapshot, result.verdict.address, rules.delimiters)
    ok, reason = result.ok, result.reason
    if user is None or user.mode is Mode.OFF:
        user = _protected_target(address, snapshot, rules)
        if user is None:
            text = f"{address} is not protected" + (f" ({kind.value} alias)" if kind is not ResolutionKind.USER else "")
            return Decision(Action.ACCEPT, "not_protected", text, checked=address, role=role)
        ok, reason = False, ROUTING_SYNTAX

    text = f"{address}: valid signature"
    valid = Decision(
        Action.ACCEPT, "valid", text, checked=address, role=role, login=user.login, user_id=user.id, mode=user.mode
    )
    if ok:
        return valid
    if role is Role.SENDER:
        text = (
            f"{user.primary_address} is protected against forgery and sender {address} has no valid "
            f"signature ({reason}); its owner must send through {rules.submission_service}"
        )
    else:
        text = (
            f"bounce to {address} refused: {user.primary_address} is protected against forgery and did not "
            f"send the message this bounce is about ({reason}); this is collateral spam"
        )
    if user.mode is Mode.TESTING:
        header = f"{rules.warning_header}: {role.value} {address} failed the forgery check ({reason})"
        return replace(valid, action=Action.WARN, reason=reason, text=text, event=EventKind.WARN, header=header)
    return replace(
        valid, action=Action.REJECT, reason=reason, text=text, code=550, enhanced="5.7.1", event=EventKind.REJECT
    )


def _malformed_bounce(request: Request, snapshot: Snapshot, rules: Rules, sender: str) -> Decision:
    """Seed 003: auto-responders that bounce with a non-null sender. Measure them; never reject."""
    recipient = request.recipient.strip().removeprefix("<").removesuffix(">")
    judged = _judge(recipient, Role.BOUNCE_RECIPIENT, request.now, snapshot, rules) if recipient else None
    if judged is None or judged.action is Action.ACCEPT:
        return Decision(Action.ACCEPT, "not_protected", f"sender {sender} is not checked", checked=sender)
    return Decision(
        Action.ACCEPT,
        "malformed_bounce",
        f"bounce-like message from {sender} to {recipient} has a non-null sender; recorded, not refused",
        checked=recipient,
        role=Role.BOUNCE_RECIPIENT,
        login=judged.login,
        user_id=judged.user_id,
        mode=judged.mode,
        event=EventKind.MALFORMED_BOUNCE,
    )
