"""Fixtures the MTA integration tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from proxy_harness import add_users
from service_harness import KEYRING, RunningService

from callout.decision import Rules
from gateway.store import Store
from signed_sender import Policy


@pytest.fixture
def service(sqlite_url: str) -> Iterator[RunningService]:
    """The verification service on a store with alice (full) and bob (off), both with passwords."""
    Store.upgrade(sqlite_url)
    store = Store.open(sqlite_url)
    add_users(store)
    running = RunningService(store, Rules(keyring=KEYRING, policy=Policy())).start()
    yield running
    running.stop()
