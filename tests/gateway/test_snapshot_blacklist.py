"""The snapshot's blacklist is refreshed incrementally, and completely whenever rows were deleted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from gateway import snapshot
from gateway.store import Store
from gateway.tagset import TagHashes

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    Store.upgrade(store_url)
    opened = Store.open(store_url, clock=lambda: NOW)
    yield opened
    opened.close()


def leak(store: Store, n: int, days: int = 7) -> str:
    signed = f"alice=sa{n:014d}@example.ac.uk"
    store.blacklist_add(signed, "alice@example.ac.uk", "leaked", NOW + days * DAY)
    return signed


def test_a_refresh_reads_only_the_new_rows_and_keeps_the_old_snapshot_intact(store: Store) -> None:
    first = [leak(store, n) for n in range(3)]
    old = snapshot.load(store.engine, NOW)
    added = leak(store, 3)
    new = snapshot.load(store.engine, NOW, previous=old)
    assert all(form in new.blacklist for form in [*first, added])
    assert added not in old.blacklist and all(old.is_blacklisted(form) for form in first)
    assert isinstance(new.blacklist, TagHashes) and isinstance(old.blacklist, TagHashes)
    assert new.blacklist._flat is old.blacklist._flat, "the base was reloaded instead of extended"


def test_a_purge_makes_the_next_refresh_a_full_one(store: Store) -> None:
    soon, later = leak(store, 1, days=1), leak(store, 2, days=9)
    old = snapshot.load(store.engine, NOW)
    assert store.blacklist_purge(NOW + 2 * DAY) == 1
    new = snapshot.load(store.engine, NOW + 2 * DAY, previous=old)
    assert later in new.blacklist and soon not in new.blacklist
    assert isinstance(new.blacklist, TagHashes) and new.blacklist.rows == 1


def test_a_row_added_after_the_newest_was_purged_is_not_missed(store: Store) -> None:
    """Ids never come back (AUTOINCREMENT on SQLite), so the new row is above the high-water mark."""
    leak(store, 1, days=9)
    leak(store, 2, days=1)  # the newest row, purged below
    old = snapshot.load(store.engine, NOW)
    store.blacklist_purge(NOW + 2 * DAY)
    reported = leak(store, 3, days=9)
    new = snapshot.load(store.engine, NOW + 2 * DAY, previous=old)
    assert reported in new.blacklist


def test_expired_rows_are_not_loaded(store: Store) -> None:
    expired = leak(store, 1, days=1)
    assert expired not in snapshot.load(store.engine, NOW + 2 * DAY).blacklist
