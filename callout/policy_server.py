"""Postfix policy delegation adapter: `check_policy_service inet:127.0.0.1:10040`.

Replies (Postfix access(5) actions): DUNNO to let other restrictions decide, `550 5.7.1 text` to
reject, `PREPEND header` in testing mode (once per message, keyed by Postfix's `instance`
attribute, since the service is asked once per recipient), `DEFER_IF_PERMIT 4.3.0 text` on an
internal fault so that mail waits rather than being guessed at (design invariant 6).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from .decision import Action, Decision
from .policy_protocol import PolicyParser, PolicyProtocolError, format_reply
from .service import VerificationService
from .streams import Session, read_chunk

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
    def __init__(self, service: VerificationService) -> None:
        self.service = service
        self.parser = PolicyParser()
        self.warned: OrderedDict[str, None] = OrderedDict()

    def answer(self, attributes: dict[str, str]) -> bytes:
        if attributes.get("request") != "smtpd_access_policy":
            return format_reply("DUNNO")
        request = self.service.request(
            attributes.get("sender", ""),
            attributes.get("recipient", ""),
            attributes.get("client_address") or None,
            attributes.get("protocol_state", "RCPT"),
        )
        decision = self.service.decide(request, "policy")
        action = action_for(decision)
        if action.startswith("PREPEND"):
            instance = attributes.get("instance", "")
            if instance and instance in self.warned:
                return format_reply("DUNNO")
            if instance:
                self.warned[instance] = None
                if len(self.warned) > _INSTANCES_REMEMBERED:
                    self.warned.popitem(last=False)
        return format_reply(action)

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await read_chunk(reader):
            try:
                requests = self.parser.feed(data)
            except PolicyProtocolError:
                return  # not Postfix; closing is the protocol's only error signal
            for attributes in requests:
                writer.write(self.answer(attributes))
            await writer.drain()


def session_factory(service: VerificationService) -> Session:
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await PolicySession(service).run(reader, writer)

    return session
