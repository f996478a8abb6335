"""`Store.event_counts`: events counted per UTC day, kind and reason, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.store import EventCount, EventKind, InvalidValue, Store, UnknownUser

DAY = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)


def test_events_are_counted_per_utc_day_kind_and_reason(store: Store) -> None:
    alice = store.add_user("alice", "alice@example.ac.uk").id
    late = DAY + dt.timedelta(hours=23, minutes=30)
    # 00:30 the next day in UTC, though still the 10th in New York: days are UTC days.
    next_day = (DAY + dt.timedelta(days=1, minutes=30)).astimezone(dt.timezone(dt.timedelta(hours=-5)))
    for at in (DAY, late):
        store.record_event(EventKind.REJECT, "unsigned", "alice@example.ac.uk", user_id=alice, at=at)
    store.record_event(EventKind.REJECT, "bad_mac", "alice=sx@example.ac.uk", user_id=alice, at=late)
    store.record_event(EventKind.WARN, "unsigned", "bob@example.ac.uk", at=next_day)
    store.record_event(EventKind.WARN, "unsigned", "old@example.ac.uk", at=DAY - dt.timedelta(days=1))

    assert store.event_counts(DAY) == [
        EventCount(DAY.date(), EventKind.REJECT, "bad_mac", 1),
        EventCount(DAY.date(), EventKind.REJECT, "unsigned", 2),
        EventCount(DAY.date() + dt.timedelta(days=1), EventKind.WARN, "unsigned", 1),
    ]


def test_event_counts_of_one_user_leave_out_everyone_else(store: Store) -> None:
    alice = store.add_user("alice", "alice@example.ac.uk").id
    store.record_event(EventKind.REJECT, "unsigned", "alice@example.ac.uk", user_id=alice, at=DAY)
    store.record_event(EventKind.REJECT, "unsigned", "other@example.ac.uk", at=DAY)
    assert store.event_counts(DAY, user="alice") == [EventCount(DAY.date(), EventKind.REJECT, "unsigned", 1)]


def test_event_counts_refuse_an_unknown_user_and_a_naive_time(store: Store) -> None:
    with pytest.raises(UnknownUser):
        store.event_counts(DAY, user="nobody")
    with pytest.raises(InvalidValue):
        store.event_counts(DAY.replace(tzinfo=None))
