"""Call-forward verification as a check for configured internal domains (seed 003, "Standardization").

"Call-forward verification is useful within an organization (e.g. for ppsw to be able to verify
addresses at departmental and college email servers)." How it joins the decision core without
making `decide` impure:

  1. `decide` runs first, as always, on the snapshot in memory.
  2. Only if it accepted an address because it is not ours to judge (reason `not_protected`), and
     that address (the sender of a normal message or the recipient of a bounce: invariant 4) is
     in one of `callout_domains`, the `CalloutClient` asks that domain's server (async, cached).
  3. The pure `combine` turns the local decision and the remote result into the final one:
     positive keeps the decision; negative rejects (550); temporary defers (451, invariant 6).

Addresses of our own opted-in users are never called forward: their signature is the stronger
answer. An adapter that wants the check awaits `ForwardCheck.decide(request, adapter)` where it
would call `VerificationService.decide(request, adapter)`; both return a `Decision`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from dataclasses import replace

from gateway.config import Config, ConfigError

from .callout_client import CalloutClient, CalloutResult, Outcome, checked_address, parse_routes
from .decision import Action, Decision, Request, Role
from .service import VerificationService

log = logging.getLogger("antiforgery.forward")


def combine(decision: Decision, result: CalloutResult) -> Decision:
    """The final decision for a locally unprotected address, given what its own server said."""
    address = decision.checked or ""
    if result.outcome is Outcome.POSITIVE:
        return decision
    bounce = decision.role is Role.BOUNCE_RECIPIENT
    if result.outcome is Outcome.NEGATIVE:
        text = (
            f"bounce to {address} refused: its mail server does not accept it ({result.detail})"
            if bounce
            else f"sender {address} is refused by its own mail server ({result.detail}); it cannot send mail"
        )
        # RFC 3463: X.1.1 bad destination mailbox; X.1.0 other address status (the sender).
        return replace(decision, action=Action.REJECT, reason="callout_negative", text=text, code=550,
                       enhanced="5.1.1" if bounce else "5.1.0")
    text = f"cannot verify {address} with its mail server now ({result.detail}); try again later"
    # RFC 3463 X.4.3: the server we use as a directory for this domain did not answer.
    return replace(decision, action=Action.DEFER, reason="callout_unavailable", text=text, code=451, enhanced="4.4.3")


class ForwardCheck:
    def __init__(self, service: VerificationService, client: CalloutClient, domains: Iterable[str]) -> None:
        self.service = service
        self.client = client
        self.domains = frozenset(d.lower() for d in domains)

    def target(self, decision: Decision) -> str | None:
        """The address to call forward for, or None when the local decision stands."""
        address = decision.checked
        if decision.action is not Action.ACCEPT or decision.reason != "not_protected" or decision.role is None:
            return None
        if not address or address.rpartition("@")[2].lower() not in self.domains:
            return None
        return address

    async def decide(self, request: Request, adapter: str) -> Decision:
        decision = self.service.decide(request, adapter)
        address = self.target(decision)
        if address is None:
            return decision
        return await self.confirm(request, decision, address, adapter)

    async def confirm(self, request: Request, decision: Decision, address: str, adapter: str) -> Decision:
        """Ask `address`'s own server (`target` chose it) and combine its answer with `decision`."""
        try:
            checked_address(address)
        except ValueError as exc:  # not an address the client can put in RCPT TO
            log.info("callout skipped for %r: %s", address, exc)
            return decision
        result = await self.client.verify(address)  # any other failure is a fault, never an accept
        final = combine(decision, result)
        log.info(
            "callout adapter=%s address=%s outcome=%s%s action=%s client=%s detail=%s",
            adapter,
            address,
            result.outcome.value,
            " (cached)" if result.cached else "",
            final.action.value,
            request.client_address or "-",
            result.detail,
        )
        return final


def client_from(config: Config) -> CalloutClient:
    """The callout client the configuration describes; ConfigError names a bad route."""
    v = config.verification
    try:
        routes = parse_routes(v.callout_routes)
    except ValueError as exc:
        raise ConfigError(f"{config.path}: [verification] callout_routes: {exc}") from None
    return CalloutClient(
        helo=v.callout_hostname or socket.getfqdn(),
        routes=routes,
        timeout=v.callout_timeout,
        positive_ttl=v.callout_positive_ttl,
        negative_ttl=v.callout_negative_ttl,
    )


def forward_from(config: Config, service: VerificationService) -> ForwardCheck | None:
    """The check for `callout_domains`, or None when none are configured."""
    domains = config.verification.callout_domains
    return ForwardCheck(service, client_from(config), domains) if domains else None
