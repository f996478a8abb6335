"""The store authenticator: right password, wrong password, unknown login, store down."""

from __future__ import annotations

import asyncio

from gateway import passwords
from gateway.store import Store
from gateway.submission.auth import AuthOutcome, StoreAuthenticator


def test_store_passwords(store: Store) -> None:
    store.add_user("alice", "alice@example.ac.uk", password_hash=passwords.hash_password("correct horse"))
    store.add_user("bob", "bob@example.ac.uk")  # no password: may not log in with one
    auth = StoreAuthenticator(store)

    def outcome(user: str, password: str) -> AuthOutcome:
        return asyncio.run(auth.authenticate(user, password, "192.0.2.1")).outcome

    assert asyncio.run(auth.authenticate("ALICE", "correct horse", None)).login == "alice"
    assert outcome("alice", "wrong") is AuthOutcome.BAD_CREDENTIALS
    assert outcome("nobody", "correct horse") is AuthOutcome.BAD_CREDENTIALS
    assert outcome("bob", "anything") is AuthOutcome.BAD_CREDENTIALS
    assert outcome("alice", "") is AuthOutcome.BAD_CREDENTIALS


def test_store_down_is_unavailable_not_a_wrong_password() -> None:
    dead = Store.open("postgresql+psycopg://nobody@127.0.0.1:1/none", check_schema=False)
    try:
        result = asyncio.run(StoreAuthenticator(dead).authenticate("alice", "pw", None))
        assert result.outcome is AuthOutcome.UNAVAILABLE
    finally:
        dead.close()
