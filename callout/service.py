"""The verification service: decisions on the directory snapshot, event recording and metrics.

Adapters call `VerificationService.decide`, which never touches the database: it reads the
snapshot that `gateway.directory.Directory` keeps fresh (design, "Scale"). With no snapshot
loaded yet, every answer is a temporary failure (design invariant 6). Events go to the store
through `events.EventWriter`, off the request path: a store that cannot take them (disk full,
stopped) never delays or changes an answer.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Histogram

from gateway.directory import Directory
from gateway.snapshot import Snapshot
from gateway.store import Store

from .decision import Decision, Request, Rules, decide, unavailable
from .events import EVENTS_DROPPED, EventWriter

log = logging.getLogger("antiforgery.verify")

DECISIONS = Counter("antiforgery_decisions", "Verification decisions", ["adapter", "action", "reason"])
LATENCY = Histogram(
    "antiforgery_decision_seconds",
    "Time to decide one request",
    ["adapter"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
)

# prometheus_client's labels() locks and builds a key on every call: keep the children (issue 7).
_latency = functools.cache(LATENCY.labels)
_decisions = functools.cache(DECISIONS.labels)


class VerificationService:
    def __init__(
        self,
        store: Store,
        rules: Rules,
        *,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
        directory: Directory | None = None,
    ) -> None:
        """Pass `directory` to share one snapshot with other services; otherwise this one owns it."""
        self._owns_directory = directory is None
        self.directory = directory or Directory(store, refresh_seconds=refresh_seconds, clock=clock)
        self.rules = rules
        self.clock = clock
        self.events = EventWriter(lambda: self.store)

    # -- deciding -------------------------------------------------------------------------

    def decide(self, request: Request, adapter: str, record: bool = True) -> Decision:
        """Decide on the in-memory snapshot. `record=False` for a second look at a message already
        decided (Authentication-Results at end of data), so that statistics count it once."""
        started = time.perf_counter()
        current = self.snapshot
        if current is None:
            decision = unavailable("the directory has not been loaded from the store")
        else:
            try:
                decision = decide(request, current, self.rules)
            except Exception:  # a bug must cost a retry, never a wrong accept or reject
                log.exception("decision failed for sender=%r recipient=%r", request.sender, request.recipient)
                decision = unavailable("internal error")
        _latency(adapter).observe(time.perf_counter() - started)
        _decisions(adapter, decision.action.value, decision.reason).inc()
        if decision.event is not None or decision.action.value != "accept":
            log.info(
                "decision adapter=%s action=%s reason=%s checked=%s role=%s user=%s client=%s",
                adapter,
                decision.action.value,
                decision.reason,
                decision.checked,
                decision.role.value if decision.role else "-",
                decision.login or "-",
                request.client_address or "-",
            )
        if record and decision.event is not None:
            self.events.put(decision, request, adapter)
        return decision

    def request(self, sender: str, recipient: str, client_address: str | None = None, state: str = "RCPT") -> Request:
        return Request(sender, recipient, self.clock(), client_address, state)

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot | None:
        return self.directory.snapshot

    @snapshot.setter
    def snapshot(self, value: Snapshot | None) -> None:
        self.directory.snapshot = value

    @property
    def store(self) -> Store:
        return self.directory.store

    @store.setter
    def store(self, value: Store) -> None:
        self.directory.store = value

    async def refresh(self) -> bool:
        return await self.directory.refresh()

    async def start(self) -> None:
        if self._owns_directory:
            await self.directory.start()
        await self.events.start()

    async def stop(self) -> None:
        await self.events.stop()
        if self._owns_directory:
            await self.directory.stop()


__all__ = ["EVENTS_DROPPED", "VerificationService"]
