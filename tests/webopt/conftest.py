"""Fixtures for the opt-in pages: a real configuration file, key file and store (SQLite and
PostgreSQL), the application from `webopt.create_app`, and test clients that are logged in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from web_support import PASSWORD, Site, log_in, make_app, write_config

from gateway import passwords
from gateway.store import Mode, Store
from webopt.services import EXTENSION

#: Argon2id at the lowest cost: a test logs in many times, and each check at the production cost
#: takes half a second. The production parameters are tested in tests/gateway/test_passwords.py.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_HASHER", CHEAP_HASHER)


@pytest.fixture(scope="session")
def password_hash() -> str:
    return CHEAP_HASHER.hash(PASSWORD)


@pytest.fixture
def site(tmp_path: Path, store: Store, store_url: str, password_hash: str) -> Site:
    """alice (testing mode), bob (off) and the postmaster carol, all with PASSWORD."""
    store.add_user("alice", "alice@example.ac.uk", Mode.TESTING, password_hash)
    store.add_user("bob", "bob@example.ac.uk", Mode.OFF, password_hash)
    store.add_user("carol", "carol@example.ac.uk", Mode.OFF, password_hash, is_admin=True)
    return Site(write_config(tmp_path, store_url), store)


@pytest.fixture
def app(site: Site) -> Iterator[Flask]:
    application = make_app(site.config)
    yield application
    application.extensions[EXTENSION].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def alice(app: Flask) -> FlaskClient:
    """A client logged in as alice."""
    logged_in = app.test_client()
    assert log_in(logged_in, "alice").status_code == 303
    return logged_in


@pytest.fixture
def carol(app: Flask) -> FlaskClient:
    """A client logged in as the postmaster carol."""
    logged_in = app.test_client()
    assert log_in(logged_in, "carol").status_code == 303
    return logged_in
