"""gateway.signed_cache.SignedCache: it hands out exactly what signing would, and never outlives a change."""

from __future__ import annotations

import time

from adapter_support import NetstringClient
from service_harness import KEYRING, RunningService

from callout import socketmap_server
from gateway.signed_cache import SignedCache
from gateway.store import Mode
from signed_sender import Key, Keyring, Policy, sign, verify

NOW = 1_790_000_000.0  # a fixed moment, 2026-09-21
HOUR = 3600


def test_cached_addresses_are_those_signing_makes_for_each_hour() -> None:
    cache, policy = SignedCache(), Policy()
    for offset in (0, 59, 1799, 3599, 3600, 7300, 86_400):
        now = NOW - NOW % HOUR + offset
        for address in ("alice@example.ac.uk", "Bob.Smith@Example.ac.uk", "carol+x@example.ac.uk"):
            first = cache.sign(address, KEYRING, now, policy)
            assert first == sign(address, KEYRING, now, policy)
            assert cache.sign(address, KEYRING, now, policy) is first  # the second time is not signed again


def test_a_new_key_or_policy_is_used_at_once() -> None:
    cache, policy = SignedCache(), Policy()
    cache.sign("alice@example.ac.uk", KEYRING, NOW, policy)
    rotated = Keyring([KEYRING.current, Key(1, b"n" * 32)], 1)
    signed = cache.sign("alice@example.ac.uk", rotated, NOW, policy)
    assert signed == sign("alice@example.ac.uk", rotated, NOW, policy)
    assert verify(signed, rotated, NOW).ok and not verify(signed, KEYRING, NOW).ok
    plus = Policy(separator="+")
    assert cache.sign("alice@example.ac.uk", rotated, NOW, plus).startswith("alice+")


def test_the_cache_is_bounded() -> None:
    cache, policy = SignedCache(size=10), Policy()
    for n in range(25):
        address = f"user{n}@example.ac.uk"
        assert cache.sign(address, KEYRING, NOW, policy) == sign(address, KEYRING, NOW, policy)
        assert len(cache._signed) <= 10


def test_an_opt_out_takes_effect_at_the_next_request_although_the_address_was_signed(
    running_service: RunningService,
) -> None:
    running_service.store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    running_service.call(running_service.service.refresh())
    port = running_service.listen("socketmap", socketmap_server.session_factory(running_service.service))
    client = NetstringClient(port)
    try:
        first, second = (client.lookup("sign", "alice@example.ac.uk") for _ in range(2))
        assert first == second and first.startswith("OK alice=")
        assert verify(first.removeprefix("OK "), KEYRING, time.time()).ok
        running_service.store.set_mode("alice", Mode.OFF)
        running_service.call(running_service.service.refresh())
        assert client.lookup("sign", "alice@example.ac.uk").startswith("NOTFOUND")
    finally:
        client.close()
