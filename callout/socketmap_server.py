"""Postfix socketmap adapter (socketmap_table(5)): a `sign` map for submission, a `verify` map for senders.

Protocol (socketmap_table(5), "PROTOCOL"): each request is one netstring `name <space> key`, each
reply one netstring: `OK <space> value`, `NOTFOUND <space>`, `TEMP <space> reason` or
`PERM <space> reason`. Postfix keeps the connection open and sends the next request on it; a
client that sends a malformed netstring is not Postfix, and the connection is closed. Map names
and keys are compared case-insensitively (Postfix may fold the key to lower case, or not).

`sign` (seed 003, "Message submission"): KEY is the envelope sender of a submitted message. A user
in testing or full mode (by a primary or extra address, a single-target alias, or an address
extension) gets `OK <signed address>`; everyone else, an address that already carries a tag, one
whose signed local part would exceed 64 octets (logged), and any partial key (`@domain`, a bare
local part) gets `NOTFOUND `. No snapshot loaded: `TEMP`, so cleanup defers the message rather
than sending it unsigned (invariant 6). See `callout.signing` for the rule.

Forwarded mail is never signed (invariant 1), and this map cannot tell: that is the MTA's job.
Only the cleanup service behind the submission port may use it, and only for the envelope sender
(`sender_canonical_classes`), never for the From: header; and only after Postfix has checked that
the authenticated login owns the sender (`reject_sender_login_mismatch`), as the map signs whatever
it is given. Postfix sends a socketmap only the full address, no partial keys (socketmap_table(5),
"REQUEST FORMAT"), so no recipient delimiter is stripped and propagated into a signed result;
partial keys get NOTFOUND all the same. The lines a postmaster installs, commented and loaded as
shipped by tests/integration/test_postfix_socketmap.py, are deploy/postfix/submission-socketmap-master.cf
and deploy/postfix/submission-socketmap-main.cf.

`verify`: KEY is the envelope sender of a message arriving from outside; the value is a Postfix
access(5) action: `OK 550 5.7.1 <text>` for a forgery, `OK PREPEND <header>` for a testing-mode
user, `NOTFOUND ` to let the other restrictions decide, and `OK DEFER_IF_PERMIT 4.3.0 <text>`
when the directory is not loaded (invariant 6, as the policy adapter answers). Not `TEMP`: smtpd
takes that for a broken table and tells the client "451 4.3.5 Server configuration error".
Every smtpd but submission (which sets its own sender restrictions) asks it: the main.cf lines are
deploy/postfix/verification-socketmap-main.cf.

Only senders are checked here (invariant 4): the recipient of a bounce (null sender) needs the
policy adapter (`check_policy_service`) or SMTP callouts. With smtpd_delay_reject, sender
restrictions run for each recipient, so a testing-mode header may be prepended once per
recipient; the policy adapter, which remembers the message instance, adds it once.
"""

from __future__ import annotations

from .decision import Action, Decision
from .exchange import Exchanges
from .netstring import NetstringParser, encode
from .service import VerificationService
from .signing import Outcome, is_whole_address, sign_sender

NOTFOUND = "NOTFOUND "


def _one_line(text: str) -> str:
    """Replies are single-line Postfix values; a stray CR or LF must not split them."""
    return " ".join(text.split())


def verify_value(decision: Decision) -> str:
    """The socketmap reply for a decision, as a Postfix access(5) action."""
    if decision.action is Action.REJECT:
        return _one_line(f"OK {decision.code} {decision.enhanced} {decision.text}")
    if decision.action is Action.WARN and decision.header:
        return _one_line(f"OK PREPEND {decision.header}")
    if decision.action is Action.DEFER:
        return _one_line(f"OK DEFER_IF_PERMIT {decision.enhanced} {decision.text}")
    return NOTFOUND


class SocketmapSession:
    def __init__(self, service: VerificationService) -> None:
        self.service = service
        self.parser = NetstringParser()

    def answer(self, payload: bytes) -> bytes:
        name, space, key = payload.decode("utf-8", "replace").partition(" ")
        if not space:
            return b"PERM malformed request: expected 'name key'"
        name = name.lower()
        if name == "sign":
            reply = self.sign(key)
        elif name == "verify":
            reply = self.verify(key)
        else:
            reply = "PERM unknown map"
        return reply.encode("utf-8", "replace")

    def sign(self, key: str) -> str:
        signing = sign_sender(self.service, key, "socketmap")
        if signing.outcome is Outcome.SIGNED:
            return _one_line(f"OK {signing.address}")
        if signing.outcome is Outcome.UNAVAILABLE:
            return "TEMP forgery protection unavailable: the directory has not been loaded"
        return NOTFOUND

    def verify(self, key: str) -> str:
        key = key.strip()
        if not is_whole_address(key):
            return NOTFOUND  # `<>`, a domain, `user@`: not a sender this map can judge
        decision = self.service.decide(self.service.request(key, ""), "socketmap")
        return verify_value(decision)

    def feed(self, data: bytes) -> list[bytes]:
        return self.parser.feed(data)

    def respond(self, payload: bytes) -> bytes:
        return encode(self.answer(payload))

    def finish(self) -> list[bytes]:
        return []


def session_factory(service: VerificationService) -> Exchanges:
    return lambda: SocketmapSession(service)
