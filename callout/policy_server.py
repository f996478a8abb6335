"""Postfix policy delegation adapter: `check_policy_service inet:127.0.0.1:10040`.

In smtpd_recipient_restrictions it decides on each recipient; in smtpd_data_restrictions (the
DATA stage, before content arrives) it answers `PREPEND Authentication-Results: ...` with our
verdict when `[verification] authentication_results` is on.

Replies (Postfix access(5) actions): DUNNO to let other restrictions decide, `550 5.7.1 text` to
reject, `PREPEND header` in testing mode (once per message, keyed by Postfix's `instance`
attribute, since the service is asked once per recipient), `DEFER_IF_PERMIT 4.3.0 text` on an
internal fault so that mail waits rather than being guessed at (design invariant 6).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable

from . import authresults
from .authresults import SpfCheck
from .decision import Action, Decision, Request
from .exchange import Exchanges
from .forward import ForwardCheck
from .policy_protocol import PolicyParser, format_reply
from .service import VerificationService

#: The request attributes this adapter reads (SMTPD_POLICY_README, "Protocol description").
ATTRIBUTES = frozenset(
    {b"request", b"protocol_state", b"sender", b"recipient", b"client_address", b"helo_name", b"instance"}
)
#: Message instances remembered per connection to prepend the warning header only once.
_INSTANCES_REMEMBERED = 1000


def action_for(decision: Decision) -> str:
    if decision.action is Action.REJECT:
        return f"{decision.code} {decision.enhanced} {decision.text}"
    if decision.action is Action.DEFER:
        return f"DEFER_IF_PERMIT {decision.enhanced} {decision.text}"
    if decision.action is Action.WARN and decision.header:
        return f"PREPEND {decision.header}"
    return "DUNNO"


class PolicySession:
    def __init__(
        self,
        service: VerificationService,
        authserv_id: str | None = None,
        spf_check: SpfCheck | None = None,
        forward: ForwardCheck | None = None,
    ) -> None:
        self.service = service
        self.forward = forward
        self.authserv_id = authserv_id
        self.spf_check = spf_check
        self.parser = PolicyParser(keep=ATTRIBUTES)
        self.warned: OrderedDict[str, None] = OrderedDict()

    def _first_time(self, instance: str) -> bool:
        """Whether this message (Postfix `instance`) has had no header from us yet."""
        if not instance:
            return True
        if instance in self.warned:
            return False
        self.warned[instance] = None
        if len(self.warned) > _INSTANCES_REMEMBERED:
            self.warned.popitem(last=False)
        return True

    def _authentication_results(self, attributes: dict[str, str], decision: Decision) -> bytes | Awaitable[bytes]:
        """`PREPEND Authentication-Results: ...`; awaitable when an SPF check must be made first."""
        if self.spf_check is None or not attributes.get("client_address"):
            return self._prepend(attributes, decision, None)
        return self._authentication_results_with_spf(attributes, decision)

    async def _authentication_results_with_spf(self, attributes: dict[str, str], decision: Decision) -> bytes:
        """pyspf asks DNS synchronously, for seconds when the sender's domain wants it so: in a
        thread, so that the event loop every adapter shares goes on answering meanwhile."""
        assert self.spf_check is not None
        spf = await asyncio.to_thread(
            self.spf_check, attributes["client_address"], attributes.get("sender", ""), attributes.get("helo_name", "")
        )
        return self._prepend(attributes, decision, spf)

    def _prepend(self, attributes: dict[str, str], decision: Decision, spf: str | None) -> bytes:
        assert self.authserv_id is not None
        header = authresults.header(self.authserv_id, decision, spf, attributes.get("sender", ""))
        return format_reply(f"PREPEND {header}")

    def feed(self, data: bytes) -> list[dict[str, str]]:
        return self.parser.feed(data)

    def finish(self) -> list[dict[str, str]]:
        return []

    def respond(self, attributes: dict[str, str]) -> bytes | Awaitable[bytes]:
        """The reply; awaitable only when an internal domain's own server must be asked (call-forward)
        or an SPF check made (Authentication-Results at DATA)."""
        if attributes.get("request") != "smtpd_access_policy":
            return format_reply("DUNNO")
        request = self.service.request(
            attributes.get("sender", ""),
            attributes.get("recipient", ""),
            attributes.get("client_address") or None,
            attributes.get("protocol_state", "RCPT"),
        )
        at_data = request.protocol_state == "DATA" and bool(self.authserv_id)
        decision = self.service.decide(request, "policy", record=not at_data)
        if self.forward is not None and not at_data and (address := self.forward.target(decision)):
            return self._forwarded(request, decision, address, attributes)  # an internal domain: ask its server
        if at_data and decision.action is not Action.DEFER:
            # Testing-mode warnings were prepended at RCPT; here every message gets the verdict.
            return self._authentication_results(attributes, decision)
        return self._reply(attributes, decision)

    async def _forwarded(self, request: Request, decision: Decision, address: str, attributes: dict[str, str]) -> bytes:
        assert self.forward is not None
        return self._reply(attributes, await self.forward.confirm(request, decision, address, "policy"))

    def _reply(self, attributes: dict[str, str], decision: Decision) -> bytes:
        action = action_for(decision)
        if action.startswith("PREPEND") and not self._first_time(attributes.get("instance", "")):
            return format_reply("DUNNO")
        return format_reply(action)


def session_factory(
    service: VerificationService,
    authserv_id: str | None = None,
    spf_check: SpfCheck | None = None,
    forward: ForwardCheck | None = None,
) -> Exchanges:
    return lambda: PolicySession(service, authserv_id, spf_check, forward)
