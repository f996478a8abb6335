"""Events recorded in batches, as a busy verification node writes them."""

from __future__ import annotations

import datetime as dt

from gateway.store import EventKind, Mode, NewEvent, Store

AT = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_a_batch_is_recorded_whole_and_long_values_are_cut(store: Store) -> None:
    alice = store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL).id
    batch = [
        NewEvent(AT, EventKind.REJECT, "alice@example.ac.uk", "unsigned", alice, "192.0.2.1", "policy"),
        NewEvent(AT, EventKind.WARN, "x" * 1000 + "@example.ac.uk", "bad_mac", None, "c" * 300),
    ]
    assert store.record_events(batch) == 2
    events = store.list_events()
    assert {e.reason for e in events} == {"unsigned", "bad_mac"}
    assert all(len(e.address) <= 512 and (e.client is None or len(e.client) <= 255) for e in events)
    assert [e.user_id for e in store.list_events(user="alice")] == [alice]


def test_an_event_of_a_missing_user_is_dropped_not_the_batch(store: Store) -> None:
    alice = store.add_user("alice", "alice@example.ac.uk").id
    batch = [
        NewEvent(AT, EventKind.REJECT, "alice@example.ac.uk", "unsigned", alice),
        NewEvent(AT, EventKind.REJECT, "ghost@example.ac.uk", "unsigned", alice + 1000),
    ]
    assert store.record_events(batch) == 1
    assert [e.address for e in store.list_events()] == ["alice@example.ac.uk"]


def test_an_empty_batch_records_nothing(store: Store) -> None:
    assert store.record_events([]) == 0


def test_wire_text_postgresql_cannot_store_is_recorded_readably_not_lost_with_its_batch(store: Store) -> None:
    """NUL and lone surrogates (undecodable octets from a policy request) are refused by PostgreSQL
    text columns; the event keeps them as U+FFFD instead, and its batch is not lost."""
    batch = [
        NewEvent(AT, EventKind.REJECT, "ok@example.ac.uk", "unsigned"),
        NewEvent(AT, EventKind.REJECT, "a\x00b@example.ac.uk", "unsigned", None, "192.0.2.1\x00", "s=<\udcff>"),
    ]
    assert store.record_events(batch) == 2
    addresses = sorted(e.address for e in store.list_events())
    assert addresses == ["a\ufffdb@example.ac.uk", "ok@example.ac.uk"]
