"""Call-forward verification against real SMTP servers on loopback and a fake MX resolver; never off loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from service_harness import KEYRING, RunningService
from smtp_servers import Scripted, Servers, unused_port

from callout.callout_cache import TtlCache
from callout.callout_client import (
    CalloutClient,
    CalloutResult,
    Outcome,
    SmtpReplyError,
    checked_address,
    parse_reply_line,
    parse_routes,
)
from callout.callout_responder import CalloutHandler
from gateway.store import Mode
from signed_sender import sign


@pytest.fixture
def servers() -> Iterator[Servers]:
    running = Servers()
    yield running
    running.close()


def no_dns(domain: str) -> Any:
    raise AssertionError(f"DNS asked about {domain} although a route was configured")


def routed(port: int, **settings: Any) -> CalloutClient:
    return CalloutClient(helo="gateway.test", routes={"dept.test": ("127.0.0.1", port)}, resolver=no_dns, **settings)


def verify(client: CalloutClient, address: str) -> CalloutResult:
    return asyncio.run(client.verify(address))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- against our own responder on a real store ------------------------------------------------------


@pytest.fixture
def responder_port(running_service: RunningService) -> int:
    running_service.store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    running_service.call(running_service.service.refresh())
    server = running_service.call(CalloutHandler(running_service.service).listen("127.0.0.1", 0))
    running_service.servers.append(server)
    return int(server.sockets[0].getsockname()[1])


def test_our_responder_is_positive_for_a_signed_address_and_negative_for_a_forged_one(responder_port: int) -> None:
    client = CalloutClient(helo="gateway.test", routes={"example.ac.uk": ("127.0.0.1", responder_port)})
    signed = verify(client, sign("alice@example.ac.uk", KEYRING, time.time()))
    assert signed.outcome is Outcome.POSITIVE and signed.host == f"127.0.0.1:{responder_port}"
    forged = verify(client, "alice@example.ac.uk")
    assert forged.outcome is Outcome.NEGATIVE
    assert forged.detail.startswith("550 5.7.1 bounce to alice@example.ac.uk refused")


# -- against scripted servers -----------------------------------------------------------------------


def test_the_dialogue_is_a_callout_that_never_sends_data(servers: Servers) -> None:
    handler = Scripted()
    assert verify(routed(servers.smtp(handler)), "bob@dept.test").outcome is Outcome.POSITIVE
    assert handler.seen == ["EHLO gateway.test", "MAIL <>", "RCPT bob@dept.test", "QUIT"]


def test_a_server_refusing_ehlo_is_greeted_with_helo(servers: Servers) -> None:
    handler = Scripted(ehlo=False)
    assert verify(routed(servers.smtp(handler)), "bob@dept.test").outcome is Outcome.POSITIVE
    assert handler.seen[:2] == ["EHLO gateway.test", "HELO gateway.test"]


def test_5xx_to_rcpt_is_negative_with_the_servers_reply(servers: Servers) -> None:
    result = verify(routed(servers.smtp(Scripted("550 5.1.1 No such user here"))), "nobody@dept.test")
    assert result.outcome is Outcome.NEGATIVE and result.detail == "550 5.1.1 No such user here"


def test_4xx_to_rcpt_is_temporary(servers: Servers) -> None:
    result = verify(routed(servers.smtp(Scripted("451 4.3.0 Try again later"))), "bob@dept.test")
    assert result.outcome is Outcome.TEMPORARY and result.detail == "451 4.3.0 Try again later"


def test_a_refused_connection_is_temporary(servers: Servers) -> None:
    result = verify(routed(unused_port()), "bob@dept.test")
    assert result.outcome is Outcome.TEMPORARY and "cannot connect" in result.detail


def test_a_silent_server_is_temporary_once_the_overall_timeout_passes(servers: Servers) -> None:
    started = time.monotonic()
    result = verify(routed(servers.silent(), timeout=0.5), "bob@dept.test")
    assert result.outcome is Outcome.TEMPORARY and "within 0.5 s" in result.detail
    assert time.monotonic() - started < 3


def test_mx_hosts_are_tried_in_preference_order_past_dead_and_refusing_ones(servers: Servers) -> None:
    handler = Scripted()
    port = servers.smtp(handler)  # bound to 127.0.0.1 only: 127.0.0.2 refuses the connection
    servers.smtp(None, host="127.0.0.3", greeting="554 5.3.2 no service here", port=port)
    asked: list[str] = []

    async def mx(domain: str) -> Sequence[tuple[int, str]]:
        asked.append(domain)
        return [(30, "127.0.0.1."), (10, "127.0.0.2"), (20, "127.0.0.3")]

    result = verify(CalloutClient(helo="gateway.test", resolver=mx, port=port), "bob@Dept.Test")
    assert asked == ["dept.test"]
    assert result.outcome is Outcome.POSITIVE and result.host == f"127.0.0.1:{port}"


def test_when_every_host_fails_the_result_is_temporary_and_names_each_failure(servers: Servers) -> None:
    port = servers.smtp(None, host="127.0.0.3", greeting="554 5.3.2 no service here")

    async def mx(domain: str) -> Sequence[tuple[int, str]]:
        return [(10, "127.0.0.2"), (20, "127.0.0.3")]

    result = verify(CalloutClient(helo="gateway.test", resolver=mx, port=port), "bob@dept.test")
    assert result.outcome is Outcome.TEMPORARY
    assert f"127.0.0.2:{port}: cannot connect" in result.detail
    assert f"127.0.0.3:{port} greeted with 554 5.3.2 no service here" in result.detail


def test_no_mail_exchanger_or_a_failed_lookup_is_temporary_and_a_null_mx_negative() -> None:
    async def none(domain: str) -> Sequence[tuple[int, str]]:
        return []

    async def failing(domain: str) -> Sequence[tuple[int, str]]:
        raise OSError("resolver unreachable")

    async def null_mx(domain: str) -> Sequence[tuple[int, str]]:
        return [(0, ".")]

    assert verify(CalloutClient(helo="g", resolver=none), "a@dept.test").outcome is Outcome.TEMPORARY
    failed = verify(CalloutClient(helo="g", resolver=failing), "a@dept.test")
    assert failed.outcome is Outcome.TEMPORARY and "resolver unreachable" in failed.detail
    assert verify(CalloutClient(helo="g", resolver=null_mx), "a@dept.test").outcome is Outcome.NEGATIVE


def test_positive_and_negative_answers_are_cached_for_their_own_time(servers: Servers) -> None:
    handler = Scripted()
    clock = FakeClock()
    client = routed(servers.smtp(handler), positive_ttl=100, negative_ttl=10, cache=TtlCache(clock=clock))
    assert verify(client, "bob@dept.test").cached is False
    assert verify(client, "bob@DEPT.test").cached is True
    handler.rcpt_reply = "550 5.1.1 gone"
    assert verify(client, "bob@dept.test").outcome is Outcome.POSITIVE  # still cached
    clock.now = 100.0
    assert verify(client, "bob@dept.test").outcome is Outcome.NEGATIVE
    handler.rcpt_reply = "250 back"
    assert verify(client, "bob@dept.test").outcome is Outcome.NEGATIVE  # cached for 10 s
    clock.now = 110.0
    assert verify(client, "bob@dept.test").outcome is Outcome.POSITIVE
    assert handler.seen.count("RCPT bob@dept.test") == 3


def test_temporary_answers_are_never_cached(servers: Servers) -> None:
    handler = Scripted("451 4.3.0 busy")
    client = routed(servers.smtp(handler))
    assert verify(client, "bob@dept.test").outcome is Outcome.TEMPORARY
    handler.rcpt_reply = "250 OK"
    assert verify(client, "bob@dept.test").outcome is Outcome.POSITIVE


@pytest.mark.parametrize(
    "address", ["no-at-sign", "<>", "a b@dept.test", "a@dept.test>\r\nDATA", "x" * 65 + "@dept.test", "a@-bad-.test"]
)
def test_what_is_not_an_address_is_refused_before_any_connection(address: str) -> None:
    with pytest.raises(ValueError):
        verify(CalloutClient(helo="g", resolver=no_dns), address)


def test_angle_brackets_around_an_address_are_accepted() -> None:
    assert checked_address(" <bob@dept.test> ") == "bob@dept.test"


def test_reply_lines_are_parsed_and_garbage_is_refused() -> None:
    assert parse_reply_line(b"250-dept.test\r\n") == (250, True, "dept.test")
    assert parse_reply_line(b"550 5.1.1 no\x07 such user\r\n") == (550, False, "5.1.1 no? such user")
    assert parse_reply_line(b"221\r\n") == (221, False, "")
    for garbage in (b"HTTP/1.1 400 Bad Request\r\n", b"25\r\n", b"650 x\r\n", b"250_x\r\n"):
        with pytest.raises(SmtpReplyError):
            parse_reply_line(garbage)


def test_routes_are_parsed_and_bad_ones_named() -> None:
    assert parse_routes(["Dept.Test=127.0.0.1:2525", "b.test = [::1]:25"]) == {
        "dept.test": ("127.0.0.1", 2525),
        "b.test": ("::1", 25),
    }
    for bad in ("dept.test", "dept.test=127.0.0.1", "=127.0.0.1:25"):
        with pytest.raises(ValueError, match="is not"):
            parse_routes([bad])
