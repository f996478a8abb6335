"""Disk full for events (issue 7, "Faults"): answers go on unchanged, events wait and land later.

The store is a real SQLite database that really fills up: `PRAGMA max_page_count` capped at the
pages it has makes SQLite answer "database or disk is full" (SQLITE_FULL), the error a full disk
gives; with root, a tiny tmpfs filled to the last byte gives the same error from the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from components import require_component
from prometheus_client import REGISTRY
from service_harness import KEYRING, LineClient, RunningService
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from callout import policy_server
from callout.decision import Action, Decision, Request, Rules
from callout.events import EventWriter
from callout.service import VerificationService
from gateway.snapshot import Snapshot
from gateway.store import EventKind, Mode, NewEvent, Store
from signed_sender import Policy

ALICE = "alice@example.ac.uk"  # opted in: her unsigned sender is refused, and that is an event
CAROL = "carol@example.ac.uk"  # testing mode: a warning header, also an event
FORGED = {"request": "smtpd_access_policy", "protocol_state": "RCPT", "sender": ALICE, "recipient": "x@other.org"}


class FullDisk:
    """Fills the store's SQLite database on demand and counts the writes it then refused.

    `fill` caps the database at the pages it has and writes events like the service's until
    SQLite says "database or disk is full", so that no page has room for one more; `free` lifts
    the cap, as deleting files on a full disk does. The filler events have the reason "filler".
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.full = False
        self.refused = 0
        event.listen(store.engine, "checkout", self._checkout)
        event.listen(store.engine, "handle_error", self._error)

    def fill(self, user_id: int | None) -> None:
        self.full = True
        filler = NewEvent(dt.datetime.now(dt.UTC), EventKind.REJECT, ALICE, "filler", user_id, "192.0.2.0", "filler")
        with contextlib.suppress(OperationalError):
            for _ in range(100_000):
                self.store.record_events([filler])
            raise AssertionError("the database never filled up")
        self.refused = 0

    def free(self) -> None:
        self.full = False

    def _checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            pages = cursor.execute("PRAGMA page_count").fetchone()[0] if self.full else 1_073_741_823
            cursor.execute(f"PRAGMA max_page_count = {pages}")
        finally:
            cursor.close()

    def _error(self, context: Any) -> None:
        if "database or disk is full" in str(context.original_exception):
            self.refused += 1


def dropped() -> float:
    return REGISTRY.get_sample_value("antiforgery_events_dropped_total") or 0.0


def ask(client: LineClient, **attributes: str) -> str:
    body = {**FORGED, **attributes}
    client.send("".join(f"{k}={v}\n" for k, v in body.items()).encode() + b"\n")
    return str(client.read_until(b"\n\n").decode())


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def decide(running: RunningService, sender: str) -> Decision:
    """Decide on the service's loop, as the adapters do: the event queue belongs to that thread."""

    service: VerificationService = running.service

    async def on_loop() -> Decision:
        return service.decide(service.request(sender, "x@other.org"), "test")

    decision: Decision = running.call(on_loop())
    return decision


def events_in(store: Store) -> int:
    return sum(1 for e in store.list_events(limit=100_000) if e.reason != "filler")


def alice_id(running: RunningService) -> int:
    snapshot: Snapshot | None = running.service.snapshot
    assert snapshot is not None
    return int(snapshot.logins["alice"])


def quick(writer: EventWriter) -> None:
    """Short waits, so a test sees several retries in a fraction of a second."""
    writer.gather_seconds = 0.01
    writer.retry_seconds = 0.02
    writer.retry_max_seconds = 0.1


@pytest.fixture
def service(sqlite_url: str) -> Iterator[RunningService]:
    Store.upgrade(sqlite_url)
    store = Store.open(sqlite_url)
    store.add_user("alice", ALICE, mode=Mode.FULL)
    store.add_user("carol", CAROL, mode=Mode.TESTING)
    running = RunningService(store, Rules(keyring=KEYRING, policy=Policy()))
    quick(running.service.events)
    running.start()
    yield running
    running.stop()


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "antiforgery.events" and text in r.getMessage()]


def test_policy_answers_are_unchanged_while_the_disk_is_full_and_events_land_when_space_returns(
    service: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FullDisk(service.store)
    client = LineClient(service.listen("policy", policy_server.session_factory(service.service)))
    refused = ask(client)
    warned = ask(client, sender=CAROL, instance="w0")
    assert refused.startswith("action=550 5.7.1") and warned.startswith("action=PREPEND X-Antiforgery-Warning")
    wait_for(lambda: events_in(service.store) == 2, "the events from before the fault")
    lost_before = dropped()

    disk.fill(alice_id(service))
    for i in range(20):  # the socket's 5 s timeout would fail a request held up by the store
        assert ask(client, client_address=f"192.0.2.{i}") == refused
        assert ask(client, sender=CAROL, instance=f"w{i + 1}") == warned
    assert ask(client, sender="bob@other.org", recipient=ALICE) == "action=DUNNO"
    wait_for(lambda: disk.refused >= 3, "several failed writes")
    assert events_in(service.store) == 2  # the store really refused them
    assert service.service.events.held == 40 and dropped() == lost_before

    disk.free()
    wait_for(lambda: bool(messages(caplog, "events are written again")), "the writer to recover")
    wait_for(lambda: service.service.events.held == 0, "the held events to be written")
    assert events_in(service.store) == 42
    client.close()
    assert dropped() == lost_before
    stored = service.store.list_events(limit=100_000)
    assert {e.client for e in stored if e.kind is EventKind.REJECT} >= {f"192.0.2.{i}" for i in range(20)}
    assert len(messages(caplog, "events cannot be written (OperationalError: database or disk is full)")) == 1
    assert len(messages(caplog, "events are written again; 0 dropped")) == 1


def test_beyond_the_queue_bound_events_are_dropped_counted_and_logged_once(
    service: RunningService, caplog: pytest.LogCaptureFixture
) -> None:
    writer = service.service.events
    writer.limit = 5
    disk = FullDisk(service.store)
    disk.fill(alice_id(service))
    client = LineClient(service.listen("policy", policy_server.session_factory(service.service)))
    lost_before = dropped()
    for i in range(8):
        assert ask(client, client_address=f"192.0.2.{i}").startswith("action=550 5.7.1")
    wait_for(lambda: disk.refused >= 2, "failed writes")
    assert writer.held == 5 and dropped() == lost_before + 3
    assert len(messages(caplog, "event queue full (5 held)")) == 1

    disk.free()
    wait_for(lambda: bool(messages(caplog, "events are written again")), "the writer to recover")
    wait_for(lambda: writer.held == 0, "the held events to be written")
    client.close()
    stored = [e.client for e in service.store.list_events(limit=100_000) if e.reason != "filler"]
    assert sorted(c or "" for c in stored) == [f"192.0.2.{i}" for i in range(5)]  # the first five, in full
    assert len(messages(caplog, "events are written again; 3 dropped")) == 1
    assert len(messages(caplog, "event queue has room again; 3 events were dropped")) == 1


def test_stop_during_the_fault_counts_what_was_held_as_dropped(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    Store.upgrade(sqlite_url)
    store = Store.open(sqlite_url)
    store.add_user("alice", ALICE, mode=Mode.FULL)
    running = RunningService(store, Rules(keyring=KEYRING, policy=Policy()))
    quick(running.service.events)
    running.start()
    disk = FullDisk(store)
    disk.fill(alice_id(running))
    for _ in range(4):
        assert decide(running, ALICE).action is Action.REJECT
    wait_for(lambda: disk.refused >= 1, "a failed write")
    lost_before = dropped()
    running.stop()  # must not wait for space that never comes
    assert dropped() == lost_before + 4
    assert messages(caplog, "4 events not recorded at stop")


class RefusesOnce:
    """A store whose first write fails for what it contains (a bug, not a fault that passes)."""

    def __init__(self) -> None:
        self.calls = 0
        self.recorded: list[NewEvent] = []

    def record_events(self, events: list[NewEvent]) -> int:
        self.calls += 1
        if self.calls == 1:
            raise ValueError("a value the database cannot store")
        self.recorded += events
        return len(events)


def test_a_batch_the_store_refuses_for_its_content_is_dropped_not_retried_forever() -> None:
    store = RefusesOnce()
    decision = Decision(Action.REJECT, "unsigned", "refused", 550, "5.7.1", checked=ALICE, event=EventKind.REJECT)

    async def scenario() -> None:
        writer = EventWriter(lambda: cast(Store, store), gather_seconds=0.01, retry_seconds=0.01)
        await writer.start()
        writer.put(decision, Request(ALICE, "x@other.org", time.time()), "test")
        while store.calls < 1:
            await asyncio.sleep(0.01)
        writer.put(decision, Request(ALICE, "y@other.org", time.time()), "test")
        while not store.recorded:
            await asyncio.sleep(0.01)
        await writer.stop()

    lost_before = dropped()
    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert store.calls == 2 and dropped() == lost_before + 1
    assert [e.detail for e in store.recorded] == [f"test: sender=<{ALICE}> recipient=<y@other.org>"]


# --- a real full file system ------------------------------------------------------------------


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    if os.geteuid() != 0:
        require_component("a tmpfs mount", "mounting one needs root (scripts/test runs as root in CI)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        require_component("a tmpfs mount", f"mount failed: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> None:
    """Write zeros until the file system has not one byte left."""
    with path.open("wb", buffering=0) as filler:
        with contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 4096)
        with contextlib.suppress(OSError):
            while True:
                filler.write(b"\0")


def test_a_really_full_file_system_defers_events_not_mail(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "disk", "2m") as disk:
        url = f"sqlite:///{disk / 'store.sqlite3'}"
        Store.upgrade(url)
        store = Store.open(url)
        store.add_user("alice", ALICE, mode=Mode.FULL)
        running = RunningService(store, Rules(keyring=KEYRING, policy=Policy()))
        quick(running.service.events)
        running.start()
        try:
            client = LineClient(running.listen("policy", policy_server.session_factory(running.service)))
            refused = ask(client)
            wait_for(lambda: events_in(store) == 1, "the event from before the fault")
            filler = disk / "filler"
            fill(filler)
            for i in range(500):  # enough rows that the database must grow into space there is not
                assert ask(client, client_address=f"192.0.2.{i % 250}", recipient=f"x{i}@other.org") == refused
            wait_for(lambda: running.service.events.failing, "a write refused for lack of space")
            assert events_in(store) == 1
            filler.unlink()
            wait_for(lambda: events_in(store) == 501, "the held events to be written")
            client.close()
        finally:
            running.stop()


def test_event_timestamps_are_the_decisions_not_the_writes(service: RunningService) -> None:
    disk = FullDisk(service.store)
    disk.fill(alice_id(service))
    decided_at = time.time()
    decide(service, ALICE)
    wait_for(lambda: disk.refused >= 2, "failed writes")
    disk.free()
    wait_for(lambda: events_in(service.store) == 1, "the held event")
    (stored,) = [e for e in service.store.list_events(limit=100_000) if e.reason != "filler"]
    assert abs(stored.at - dt.datetime.fromtimestamp(decided_at, dt.UTC)) < dt.timedelta(seconds=1)
