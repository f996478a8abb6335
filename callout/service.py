"""The verification service: the current snapshot, its refresh, event recording and metrics.

Adapters call `VerificationService.decide`, which never touches the database: it reads the
snapshot in memory (design, "Scale"). A background task replaces the snapshot when the store's
version moves: polled every `refresh_seconds` (SQLite), or woken at once by PostgreSQL
NOTIFY. If the database is unreachable at a refresh, the last snapshot keeps serving and the
failure is logged; if it was never loaded, every answer is a temporary failure (invariant 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.exc import SQLAlchemyError

from gateway import snapshot as snapshots
from gateway.snapshot import Snapshot
from gateway.store import Store
from gateway.store.base import NOTIFY_CHANNEL

from .decision import Decision, Request, Rules, decide, unavailable

log = logging.getLogger("antiforgery.verify")

DECISIONS = Counter("antiforgery_decisions", "Verification decisions", ["adapter", "action", "reason"])
LATENCY = Histogram(
    "antiforgery_decision_seconds",
    "Time to decide one request",
    ["adapter"],
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
)
SNAPSHOT_VERSION = Gauge("antiforgery_snapshot_version", "Store version of the serving snapshot")
SNAPSHOT_AGE = Gauge("antiforgery_snapshot_loaded_timestamp", "Unix time the snapshot was loaded")
REFRESH_FAILURES = Counter("antiforgery_snapshot_refresh_failures", "Snapshot refreshes that failed")
EVENTS_DROPPED = Counter("antiforgery_events_dropped", "Events not recorded (queue full or store down)")

EVENT_QUEUE_LIMIT = 10_000


class VerificationService:
    def __init__(
        self,
        store: Store,
        rules: Rules,
        *,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.rules = rules
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.snapshot: Snapshot | None = None
        self._events: asyncio.Queue[tuple[Decision, Request, str]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stopping = False

    # -- deciding -------------------------------------------------------------------------

    def decide(self, request: Request, adapter: str) -> Decision:
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
        LATENCY.labels(adapter).observe(time.perf_counter() - started)
        DECISIONS.labels(adapter, decision.action.value, decision.reason).inc()
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
        if decision.event is not None and self._events is not None:
            try:
                self._events.put_nowait((decision, request, adapter))
            except asyncio.QueueFull:
                EVENTS_DROPPED.inc()
        return decision

    def request(self, sender: str, recipient: str, client_address: str | None = None, state: str = "RCPT") -> Request:
        return Request(sender, recipient, self.clock(), client_address, state)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._events = asyncio.Queue(EVENT_QUEUE_LIMIT)
        await self.refresh()
        self._tasks = [asyncio.create_task(self._refresh_loop()), asyncio.create_task(self._event_writer())]
        if self.store.engine.dialect.name == "postgresql":
            self._tasks.append(asyncio.create_task(self._listen_loop()))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._events is not None:
            await self._drain_events()

    async def refresh(self) -> bool:
        """Load a new snapshot if the store moved on; keep the old one if the store is down."""
        engine = self.store.engine
        try:
            if self.snapshot is not None:
                version = await asyncio.to_thread(snapshots.current_version, engine)
                if version == self.snapshot.version:
                    return False
            now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
            fresh = await asyncio.to_thread(snapshots.load, engine, now)
        except SQLAlchemyError as exc:
            REFRESH_FAILURES.inc()
            state = "keeping the last snapshot" if self.snapshot is not None else "deferring all requests"
            log.warning("store unreachable (%s); %s", str(getattr(exc, "orig", exc)).splitlines()[0], state)
            return False
        self.snapshot = fresh
        SNAPSHOT_VERSION.set(fresh.version)
        SNAPSHOT_AGE.set(time.time())
        log.info(
            "snapshot version %d: %d users (%d protected), %d aliases, %d blacklisted tags",
            fresh.version,
            len(fresh.users),
            fresh.protected_users,
            len(fresh.aliases),
            len(fresh.blacklist),
        )
        return True

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.refresh_seconds)
            self._wake.clear()
            await self.refresh()

    async def _listen_loop(self) -> None:
        """PostgreSQL: wake the refresher as soon as any node commits a change (LISTEN/NOTIFY)."""
        loop = asyncio.get_running_loop()
        while not self._stopping:
            try:
                await asyncio.to_thread(self._listen_blocking, loop)
            except Exception as exc:  # reconnect after any failure; polling covers the gap
                log.warning("LISTEN %s failed (%s); polling meanwhile", NOTIFY_CHANNEL, exc)
            await asyncio.sleep(self.refresh_seconds)

    def _listen_blocking(self, loop: asyncio.AbstractEventLoop) -> None:
        import psycopg

        url = self.store.engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            while not self._stopping:  # the timeout lets a stopping service end this thread
                for _ in connection.notifies(timeout=1.0):
                    loop.call_soon_threadsafe(self._wake.set)

    # -- events ---------------------------------------------------------------------------

    async def _event_writer(self) -> None:
        assert self._events is not None
        while True:
            item = await self._events.get()
            await self._record(*item)

    async def _drain_events(self) -> None:
        assert self._events is not None
        while not self._events.empty():
            await self._record(*self._events.get_nowait())

    async def _record(self, decision: Decision, request: Request, adapter: str) -> None:
        assert decision.event is not None
        try:
            await asyncio.to_thread(
                self.store.record_event,
                decision.event,
                decision.reason,
                decision.checked or "",
                user_id=decision.user_id,
                client=request.client_address,
                detail=f"{adapter}: sender=<{request.sender}> recipient=<{request.recipient}>",
                at=dt.datetime.fromtimestamp(request.now, dt.UTC),
            )
        except Exception as exc:  # statistics must never block or break mail
            EVENTS_DROPPED.inc()
            log.warning("event not recorded (%s)", exc)
