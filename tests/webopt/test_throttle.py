"""Login throttling as a pure object: the clock is passed in, so no test sleeps."""

from __future__ import annotations

from webopt.throttle import MAX_TRACKED, LoginThrottle, client_key, login_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_last_allowed_failure_starts_a_lockout_that_ends_on_time() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, 900, clock)
    for _ in range(2):
        throttle.failed("login:alice")
    assert throttle.retry_after("login:alice") == 0
    throttle.failed("login:alice")
    assert throttle.retry_after("login:alice") == 900
    clock.now += 600
    assert throttle.retry_after("login:alice") == 300
    clock.now += 301
    assert throttle.retry_after("login:alice") == 0
    throttle.failed("login:alice")  # a fresh count after the lockout
    assert throttle.retry_after("login:alice") == 0


def test_failures_spread_wider_than_the_window_do_not_add_up() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, 900, clock)
    for _ in range(5):
        throttle.failed("client:192.0.2.1")
        clock.now += 500
    assert throttle.retry_after("client:192.0.2.1") == 0


def test_retry_after_is_the_longest_wait_of_the_keys_asked_about() -> None:
    clock = Clock()
    throttle = LoginThrottle(1, 900, clock)
    throttle.failed("client:192.0.2.1")
    clock.now += 100
    throttle.failed("login:bob")
    assert throttle.retry_after("client:192.0.2.1", "login:bob") == 900
    assert throttle.retry_after("client:192.0.2.2", "login:carol") == 0


def test_success_clears_only_the_keys_given() -> None:
    throttle = LoginThrottle(2, 900, Clock())
    throttle.failed("client:192.0.2.1", "login:alice")
    throttle.succeeded("login:alice")
    throttle.failed("client:192.0.2.1", "login:alice")
    assert throttle.retry_after("client:192.0.2.1") > 0
    assert throttle.retry_after("login:alice") == 0


def test_memory_is_bounded_by_forgetting_the_oldest_keys() -> None:
    throttle = LoginThrottle(1, 900, Clock())
    for n in range(MAX_TRACKED + 10):
        throttle.failed(f"login:user{n}")
    assert throttle.retry_after("login:user0") == 0
    assert throttle.retry_after(f"login:user{MAX_TRACKED + 9}") == 900


def test_clients_are_counted_by_ipv4_address_and_ipv6_slash_64() -> None:
    assert client_key("192.0.2.1") == "client:192.0.2.1"
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "client:2001:db8:1:2::/64"
    assert client_key(None) == "client:unknown"
    assert login_key(" Alice ") == "login:alice"
