"""The verification service: decisions on the directory snapshot, event recording and metrics.

Adapters call `VerificationService.decide`, which never touches the database: it reads the
snapshot that `gateway.directory.Directory` keeps fresh (design, "Scale"). With no snapshot
loaded yet, every answer is a temporary failure (design invariant 6).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Histogram

from gateway.directory import Directory, cancel_all
from gateway.snapshot import Snapshot
from gateway.store import NewEvent, Store

from .decision import Decision, Request, Rules, decide, unavailable

log = logging.getLogger("antiforgery.verify")

DECISIONS = Counter("antiforgery_decisions", "Verification decisions", ["adapter", "action", "reason"])
LATENCY = Histogram(
    "antiforgery_decision_seconds",
    "Time to decide one request",
    ["adapter"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
)
EVENTS_DROPPED = Counter("antiforgery_events_dropped", "Events not recorded (queue full or store down)")

# prometheus_client's labels() locks and builds a key on every call: keep the children (issue 7).
_latency = functools.cache(LATENCY.labels)
_decisions = functools.cache(DECISIONS.labels)

EVENT_QUEUE_LIMIT = 10_000
#: Events written in one transaction: one per event cost 0.8 ms of CPU each (issue 7).
EVENT_BATCH = 500
#: How long the writer lets events gather before a transaction; statistics can wait that long.
EVENT_GATHER_SECONDS = 0.25


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
        self._events: asyncio.Queue[tuple[Decision, Request, str]] | None = None
        self._tasks: list[asyncio.Task[None]] = []

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
        if record and decision.event is not None and self._events is not None:
            try:
                self._events.put_nowait((decision, request, adapter))
            except asyncio.QueueFull:
                EVENTS_DROPPED.inc()
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
        self._events = asyncio.Queue(EVENT_QUEUE_LIMIT)
        if self._owns_directory:
            await self.directory.start()
        self._tasks = [asyncio.create_task(self._event_writer())]

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks = []
        if self._owns_directory:
            await self.directory.stop()
        if self._events is not None:
            await self._drain_events()

    # -- events ---------------------------------------------------------------------------

    async def _event_writer(self) -> None:
        assert self._events is not None
        while True:
            batch = [await self._events.get()]
            if self._events.qsize() < EVENT_BATCH:
                await asyncio.sleep(EVENT_GATHER_SECONDS)
            while len(batch) < EVENT_BATCH and not self._events.empty():
                batch.append(self._events.get_nowait())
            await self._record(batch)

    async def _drain_events(self) -> None:
        assert self._events is not None
        while not self._events.empty():
            batch: list[tuple[Decision, Request, str]] = []
            while len(batch) < EVENT_BATCH and not self._events.empty():
                batch.append(self._events.get_nowait())
            await self._record(batch)

    async def _record(self, batch: list[tuple[Decision, Request, str]]) -> None:
        events = [
            NewEvent(
                at=dt.datetime.fromtimestamp(request.now, dt.UTC),
                kind=decision.event,
                address=decision.checked or "",
                reason=decision.reason,
                user_id=decision.user_id,
                client=request.client_address,
                detail=f"{adapter}: sender=<{request.sender}> recipient=<{request.recipient}>",
            )
            for decision, request, adapter in batch
            if decision.event is not None
        ]
        try:
            recorded = await asyncio.to_thread(self.store.record_events, events)
        except Exception as exc:  # statistics must never block or break mail
            EVENTS_DROPPED.inc(len(events))
            log.warning("%d events not recorded (%s)", len(events), exc)
            return
        if recorded < len(events):
            EVENTS_DROPPED.inc(len(events) - recorded)
