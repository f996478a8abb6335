"""Per-client limits and the result cache, decided on a clock the test holds: no sleep."""

from __future__ import annotations

import pytest

from callout.callout_cache import TtlCache
from callout.ratelimit import ClientLimits, TokenBucket, client_key


def test_a_bucket_gives_its_burst_then_one_token_per_interval() -> None:
    bucket = TokenBucket(rate=0.5, burst=3, tokens=3, stamp=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(1.0) is False  # half a token
    assert bucket.take(2.0) is True
    assert bucket.take(100.0) and bucket.level(100.0) == 2.0  # refills to the burst, no further


def test_a_clock_stepping_back_mints_no_tokens() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, tokens=1, stamp=100.0)
    assert bucket.take(100.0) is True
    assert bucket.take(50.0) is False
    assert bucket.take(100.5) is False and bucket.take(101.0) is True


def test_clients_are_counted_by_ipv4_address_and_ipv6_slash_64() -> None:
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert client_key("fe80::1%eth0") == "fe80::/64"


def test_each_client_has_its_own_bucket() -> None:
    limits = ClientLimits(rate=0.001, burst=1, max_sessions=1)
    assert limits.allow("192.0.2.1", 0.0) and not limits.allow("192.0.2.1", 0.0)
    assert limits.allow("192.0.2.2", 0.0)
    assert limits.allow("2001:db8::1", 0.0) and not limits.allow("2001:db8::2", 0.0)  # one /64, one bucket


def test_sessions_are_counted_per_client_and_released() -> None:
    limits = ClientLimits(rate=1, burst=1, max_sessions=2)
    assert limits.open("192.0.2.1") and limits.open("192.0.2.1") and not limits.open("192.0.2.1")
    assert limits.open("192.0.2.2")
    limits.close("192.0.2.1")
    assert limits.sessions("192.0.2.1") == 1 and limits.open("192.0.2.1")


def test_memory_is_bounded_and_full_buckets_go_first() -> None:
    limits = ClientLimits(rate=1.0, burst=2, max_sessions=1, max_clients=3)
    limits.allow("192.0.2.1", 0.0)
    limits.allow("192.0.2.1", 0.0)  # empty: must be remembered
    for i in range(2, 10):
        limits.allow(f"192.0.2.{i}", 0.0)
    assert len(limits._buckets) <= 3
    limits = ClientLimits(rate=0.001, burst=2, max_sessions=1, max_clients=3)
    limits.allow("192.0.2.1", 0.0)
    limits.allow("192.0.2.1", 0.0)
    limits.allow("192.0.2.2", 0.0)
    limits.allow("192.0.2.3", 0.0)
    limits.allow("192.0.2.4", 1000.0)  # .2 and .3 have refilled (a new bucket is the same): they go
    assert set(limits._buckets) == {"192.0.2.1", "192.0.2.4"}


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        ClientLimits(rate=0, burst=1, max_sessions=1)


def test_cache_entries_expire_and_a_zero_ttl_stores_nothing() -> None:
    now = [0.0]
    cache: TtlCache[str] = TtlCache(max_entries=2, clock=lambda: now[0])
    cache.put("a", "positive", 10)
    cache.put("b", "temporary", 0)
    assert cache.get("a") == "positive" and cache.get("b") is None
    now[0] = 10.0
    assert cache.get("a") is None and len(cache) == 0


def test_a_full_cache_drops_expired_then_oldest_entries() -> None:
    now = [0.0]
    cache: TtlCache[int] = TtlCache(max_entries=2, clock=lambda: now[0])
    cache.put("short", 1, 1)
    cache.put("long", 2, 100)
    now[0] = 5.0
    cache.put("new", 3, 100)
    assert (cache.get("short"), cache.get("long"), cache.get("new")) == (None, 2, 3)
    cache.put("newer", 4, 100)
    assert cache.get("long") is None and len(cache) == 2
