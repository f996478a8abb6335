"""The event writer: decisions' events go to the store off the request path, and survive a fault.

`VerificationService.decide` hands each event to `EventWriter.put`, which only appends to an
in-memory queue: statistics never block or break mail, and a store that cannot write is never a
reason to defer (issue 7, "Faults"). A background task writes the queue in batches of up to
`EVENT_BATCH`, one transaction each (`Store.record_events`), after letting events gather for
`EVENT_GATHER_SECONDS`.

When a write fails for a reason the database recovers from by itself (disk full, database
stopped, connection lost, lock timeout: `TRANSIENT`), the batch goes back to the head of the
queue and is retried after a delay that doubles from `retry_seconds` up to `retry_max_seconds`;
when the store takes writes again, the events held meanwhile are written without anyone's help,
in their order. Events are dropped only when the queue holds `limit` events (the newest one is
then not queued), and a batch the database refuses for what it contains (a bug, not a fault) is
dropped rather than retried forever. Every dropped event counts in `antiforgery_events_dropped`;
the log says once per fault that writing failed, once that events are being dropped, and once
when writing works again, never once per event or per retry.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
from collections.abc import Callable

from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from gateway.store import NewEvent, Store

from .decision import Decision, Request

log = logging.getLogger("antiforgery.events")

EVENTS_DROPPED = Counter("antiforgery_events_dropped", "Events not recorded (queue full or store refused them)")

#: Events held in memory at most, written or waiting for the store; beyond that new ones are dropped.
EVENT_QUEUE_LIMIT = 10_000
#: Events written in one transaction: one per event cost 0.8 ms of CPU each (issue 7).
EVENT_BATCH = 500
#: How long the writer lets events gather before a transaction; statistics can wait that long.
EVENT_GATHER_SECONDS = 0.25
#: The first retry after a failed write, doubled after each further failure up to the maximum.
RETRY_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
#: At stop, how long the last write may take before the events still held are counted as dropped.
STOP_SECONDS = 5.0

#: Errors the database recovers from by itself: full disk, server stopped or restarting, lost
#: connection, lock or pool timeout. Worth retrying; any other error is about the batch itself.
TRANSIENT = (OperationalError, InterfaceError, PoolTimeout)

Pending = tuple[Decision, Request, str]


def _short(exc: BaseException) -> str:
    """The database's own first line ("database or disk is full"), not the statement and its rows."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {str(exc.orig).splitlines()[0] if str(exc.orig) else '-'}"
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else '-'}"


def new_event(decision: Decision, request: Request, adapter: str) -> NewEvent:
    assert decision.event is not None
    return NewEvent(
        at=dt.datetime.fromtimestamp(request.now, dt.UTC),
        kind=decision.event,
        address=decision.checked or "",
        reason=decision.reason,
        user_id=decision.user_id,
        client=request.client_address,
        detail=f"{adapter}: sender=<{request.sender}> recipient=<{request.recipient}>",
    )


class EventWriter:
    """A bounded queue of decisions' events and the task that writes it to `store()`.

    `store` is a function so that the service's store can be replaced while it runs. Call `put`
    from the event loop's thread; `start` and `stop` from a coroutine on that loop.
    """

    def __init__(
        self,
        store: Callable[[], Store],
        *,
        limit: int = EVENT_QUEUE_LIMIT,
        batch: int = EVENT_BATCH,
        gather_seconds: float = EVENT_GATHER_SECONDS,
        retry_seconds: float = RETRY_SECONDS,
        retry_max_seconds: float = RETRY_MAX_SECONDS,
        stop_seconds: float = STOP_SECONDS,
    ) -> None:
        self.store = store
        self.limit = limit
        self.batch = batch
        self.gather_seconds = gather_seconds
        self.retry_seconds = retry_seconds
        self.retry_max_seconds = retry_max_seconds
        self.stop_seconds = stop_seconds
        self._pending: collections.deque[Pending] = collections.deque()
        self._writing = 0  # events taken from the queue for the write in progress
        self._wake: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False  # a write failed and none has succeeded since
        self._dropping = False  # new events are being dropped because the queue is full
        self._dropped_in_fault = 0
        self._dropped_while_full = 0  # since the queue last became full

    @property
    def held(self) -> int:
        """Events not yet written: queued, or in the write in progress."""
        return len(self._pending) + self._writing

    @property
    def failing(self) -> bool:
        return self._failing

    # -- the request path ------------------------------------------------------------------

    def put(self, decision: Decision, request: Request, adapter: str) -> None:
        """Queue the event of `decision`; never blocks, never raises. Before `start`, a no-op."""
        if self._wake is None:
            return
        if len(self._pending) + self._writing >= self.limit:
            if not self._dropping:
                self._dropping = True
                self._dropped_while_full = 0
                log.warning("event queue full (%d held): new events are dropped until the store takes some", self.limit)
            self._drop(1)
            return
        self._pending.append((decision, request, adapter))
        self._wake.set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Write what is held (one try, at most `stop_seconds`); count what could not be as dropped."""
        if self._task is None or self._stopping is None:
            return
        self._stopping.set()
        if self._wake is not None:
            self._wake.set()
        done, _ = await asyncio.wait({self._task}, timeout=self.stop_seconds)
        if not done:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        elif not self._task.cancelled() and (error := self._task.exception()) is not None:
            log.error("the event writer had failed", exc_info=error)
        self._task = None
        lost = self.held
        if lost:
            self._drop(lost)
            log.warning("%d events not recorded at stop: the store did not take them", lost)
        self._pending.clear()
        self._writing = 0
        self._wake = None

    # -- writing ---------------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None and self._stopping is not None
        delay = self.retry_seconds
        while not self._stopping.is_set():
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()  # `stop` sets it too
                continue
            if len(self._pending) < self.batch:
                await self._pause(self.gather_seconds)
            if await self._write_batch():
                delay = self.retry_seconds
            else:
                await self._pause(delay)
                delay = min(delay * 2, self.retry_max_seconds)
        while self._pending and await self._write_batch():
            pass  # stopping: write everything held while the store takes it

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once if `stop` is called."""
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _write_batch(self) -> bool:
        """Write the oldest batch; False if the store could not and the batch is back in the queue."""
        batch = [self._pending.popleft() for _ in range(min(self.batch, len(self._pending)))]
        self._writing = len(batch)
        try:
            events = [new_event(*pending) for pending in batch]
            recorded = await asyncio.to_thread(self.store().record_events, events)
        except TRANSIENT as exc:
            self._writing = 0
            self._pending.extendleft(reversed(batch))  # in order, ahead of what came meanwhile
            if not self._failing:
                self._failing = True
                log.warning("events cannot be written (%s); %d held in memory, retrying", _short(exc), self.held)
            return False
        except Exception as exc:  # not a fault that passes: retrying would block the queue for good
            self._drop(len(batch))
            log.error("%d events dropped: the store refused them (%s)", len(batch), _short(exc))
            return True
        finally:
            self._writing = 0
        if recorded < len(events):  # events of users deleted meanwhile (Store.record_events): no fault
            EVENTS_DROPPED.inc(len(events) - recorded)
        if self._failing:
            self._failing = False
            log.warning(
                "events are written again; %d dropped during the fault, %d still held",
                self._dropped_in_fault,
                self.held,
            )
            self._dropped_in_fault = 0
        if self._dropping and self.held <= self.limit // 2:
            self._dropping = False  # the next full queue is a new fault, logged again
            log.warning("event queue has room again; %d events were dropped", self._dropped_while_full)
            self._dropped_in_fault = 0
        return True

    def _drop(self, count: int) -> None:
        EVENTS_DROPPED.inc(count)
        self._dropped_in_fault += count
        self._dropped_while_full += count
