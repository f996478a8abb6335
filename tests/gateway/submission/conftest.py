"""Fixtures the proxy's tests share: the usual users on a SQLite store, and a recording upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from proxy_harness import add_users
from recording_upstream import RecordingUpstream

from gateway.store import Store


@pytest.fixture
def users(sqlite_store: Store) -> Store:
    add_users(sqlite_store)
    return sqlite_store


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    recording = RecordingUpstream()
    yield recording
    recording.close()
