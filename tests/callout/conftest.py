"""Fixtures: a real verification service on a fresh store (SQLite and PostgreSQL) per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from callout_harness import KEYRING, RunningService

from callout.decision import Rules
from gateway.store import Store
from signed_sender import Policy


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    Store.upgrade(store_url)
    opened = Store.open(store_url)
    yield opened
    opened.close()


@pytest.fixture
def running_service(store_url: str) -> Iterator[RunningService]:
    """Service on a fresh store (SQLite and PostgreSQL); add users through `.store` first or after."""
    Store.upgrade(store_url)
    running = RunningService(Store.open(store_url), Rules(keyring=KEYRING, policy=Policy()))
    running.start()
    yield running
    running.stop()
