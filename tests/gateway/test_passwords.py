"""Argon2id password hashes: round trip, refusal of wrong and empty passwords, rehash detection."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from gateway import passwords


def test_hash_round_trip_accepts_only_the_same_password() -> None:
    stored = passwords.hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert passwords.verify_password(stored, "correct horse battery staple")
    assert not passwords.verify_password(stored, "correct horse battery stapler")


def test_same_password_hashes_differently_each_time() -> None:
    assert passwords.hash_password("pw") != passwords.hash_password("pw")


def test_empty_password_cannot_be_hashed_nor_match() -> None:
    with pytest.raises(ValueError, match="empty"):
        passwords.hash_password("")
    assert not passwords.verify_password(passwords.hash_password("pw"), "")


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=1,t=1,p=1$broken"])
def test_unusable_stored_hash_never_matches_and_needs_rehash(stored: str) -> None:
    assert not passwords.verify_password(stored, "pw")
    assert passwords.needs_rehash(stored)


def test_hash_made_with_weaker_parameters_needs_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert passwords.verify_password(weak, "pw")
    assert passwords.needs_rehash(weak)
    assert not passwords.needs_rehash(passwords.hash_password("pw"))
