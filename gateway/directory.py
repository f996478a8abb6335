"""The directory every service decides on: an in-memory snapshot of the store, kept fresh.

Design, "Scale": no request waits on the database. The snapshot is replaced whole when the store's
version moves: polled every `refresh_seconds` (SQLite), or woken at once by PostgreSQL NOTIFY.
If the database is unreachable at a refresh, the last snapshot keeps serving and the failure is
logged; if it was never loaded, `snapshot` stays None and callers answer with a temporary failure
(design invariant 6). The verification service and the submission proxy share one instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge
from sqlalchemy.exc import SQLAlchemyError

from . import snapshot as snapshots
from .snapshot import Snapshot
from .store import Store
from .store.base import NOTIFY_CHANNEL

log = logging.getLogger("antiforgery.directory")

SNAPSHOT_VERSION = Gauge("antiforgery_snapshot_version", "Store version of the serving snapshot")
SNAPSHOT_AGE = Gauge("antiforgery_snapshot_loaded_timestamp", "Unix time the snapshot was loaded")
REFRESH_FAILURES = Counter("antiforgery_snapshot_refresh_failures", "Snapshot refreshes that failed")


async def cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel background tasks and wait until each has really finished."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Directory:
    def __init__(self, store: Store, *, refresh_seconds: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.snapshot: Snapshot | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        # One refresh at a time: a slow load finishing after a fast one must not put back an
        # older directory (a NOTIFY-woken refresh can overlap an explicit one).
        self._refreshing = asyncio.Lock()
        # Failures in a row: an outage is logged when it starts and when it ends, not at every
        # refresh interval (seconds apart) for as long as it lasts.
        self._refresh_failures = 0
        self._listen_failures = 0

    async def start(self) -> None:
        await self.refresh()
        self._tasks = [asyncio.create_task(self._refresh_loop())]
        if self.store.engine.dialect.name == "postgresql":
            self._tasks.append(asyncio.create_task(self._listen_loop()))

    async def stop(self) -> None:
        self._stopping = True
        await cancel_all(self._tasks)
        self._tasks = []

    async def refresh(self) -> bool:
        """Load a new snapshot if the store moved on; keep the old one if the store is down."""
        async with self._refreshing:
            return await self._refresh()

    async def _refresh(self) -> bool:
        engine = self.store.engine
        try:
            if self.snapshot is not None:
                version = await asyncio.to_thread(snapshots.current_version, engine)
                if version == self.snapshot.version:
                    self._store_answered()
                    return False
            now = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
            fresh = await asyncio.to_thread(snapshots.load, engine, now, self.snapshot)
        except SQLAlchemyError as exc:
            REFRESH_FAILURES.inc()
            self._refresh_failures += 1
            state = "keeping the last snapshot" if self.snapshot is not None else "deferring all requests"
            level = logging.WARNING if self._refresh_failures == 1 else logging.DEBUG
            log.log(level, "store unreachable (%s); %s", str(getattr(exc, "orig", exc)).splitlines()[0], state)
            return False
        self._store_answered()
        if self.snapshot is not None and fresh.version < self.snapshot.version:
            return False  # versions only move forward; an older read lost a race
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

    def _store_answered(self) -> None:
        if self._refresh_failures:
            log.warning("store reachable again after %d failed refreshes", self._refresh_failures)
            self._refresh_failures = 0

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
                self._listen_failures += 1
                level = logging.WARNING if self._listen_failures == 1 else logging.DEBUG
                log.log(level, "LISTEN %s failed (%s); polling meanwhile", NOTIFY_CHANNEL, exc)
            await asyncio.sleep(self.refresh_seconds)

    def _listen_blocking(self, loop: asyncio.AbstractEventLoop) -> None:
        import psycopg

        url = self.store.engine.url.set(drivername="postgresql")
        with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as connection:
            connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
            if self._listen_failures:
                log.warning("LISTEN %s works again after %d failures", NOTIFY_CHANNEL, self._listen_failures)
                self._listen_failures = 0
            while not self._stopping:  # the timeout lets a stopping directory end this thread
                for _ in connection.notifies(timeout=1.0):
                    loop.call_soon_threadsafe(self._wake.set)
