"""Fuzzing each adapter's request parser: arbitrary bytes in arbitrary chunks.

A parser is a pure function of the bytes it was fed (STYLE, h11), so three things must hold for any
input: it raises nothing but its documented protocol error (which closes the connection), it
returns promptly (the hypothesis deadline catches a hang or a quadratic blow-up), and its answer
does not depend on where the network cut the stream: fed in chunks, it yields the same requests
as fed at once, and refuses the same inputs. Its buffer stays bounded, so a peer cannot make it
hold more than one request's worth of memory.

The inputs are arbitrary bytes interleaved with fragments of valid requests, so that the fuzzer
gets past the first byte of each protocol.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callout import http_server, milter_protocol, netstring, policy_protocol, policy_server, readsocket_server

FUZZ = settings(max_examples=200, deadline=1000, suppress_health_check=[HealthCheck.too_slow])


def wire(fragments: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(st.one_of(st.sampled_from(fragments), st.binary(max_size=40)), max_size=20).map(b"".join)


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` split into chunks of the given sizes (cycled), as a network might deliver it."""
    chunks, at, k = [], 0, 0
    while at < len(data):
        size = sizes[k % len(sizes)] if sizes else len(data)
        chunks.append(data[at : at + size])
        at, k = at + size, k + 1
    return chunks


chunk_sizes = st.lists(st.integers(min_value=1, max_value=64), min_size=1, max_size=8)


def run(feed: Callable[[bytes], list[Any]], chunks: list[bytes], error: type[Exception]) -> tuple[list[Any], bool]:
    """(everything parsed, whether the protocol error was raised); any other exception fails the test."""
    parsed: list[Any] = []
    for chunk in chunks:
        try:
            parsed += feed(chunk)
        except error:
            return parsed, True
    return parsed, False


def same_either_way(
    factory: Callable[[], Any], data: bytes, sizes: list[int], error: type[Exception]
) -> tuple[list[Any], bool]:
    whole, whole_failed = run(factory().feed, [data], error)
    parts, parts_failed = run(factory().feed, cut(data, sizes), error)
    assert whole_failed == parts_failed, (data, sizes)
    if not whole_failed:
        assert parts == whole
    return parts, parts_failed


# --- Postfix policy delegation ------------------------------------------------------------------

POLICY_FRAGMENTS = [
    b"request=smtpd_access_policy\n", b"protocol_state=RCPT\n", b"sender=alice@example.ac.uk\n",
    b"recipient=bob@other.org\n", b"sender=\n", b"\n", b"\r\n", b"=", b"x" * 4000, b"\xff\xfe", b"\0",
]


@FUZZ
@given(wire(POLICY_FRAGMENTS), chunk_sizes)
def test_policy_parser(data: bytes, sizes: list[int]) -> None:
    """Fed whole, a single request takes the parser's fast path; cut, the line loop: same answers."""
    requests, _ = same_either_way(policy_protocol.PolicyParser, data, sizes, policy_protocol.PolicyProtocolError)
    for request in requests:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in request.items())
        assert len(request) <= policy_protocol.MAX_ATTRIBUTES
    kept, _ = same_either_way(
        lambda: policy_protocol.PolicyParser(keep=policy_server.ATTRIBUTES),
        data, sizes, policy_protocol.PolicyProtocolError,
    )
    assert kept == [{k: v for k, v in r.items() if k.encode() in policy_server.ATTRIBUTES} for r in requests]


def test_policy_line_of_the_largest_size_is_accepted_whatever_the_chunking() -> None:
    """A line of MAX_LINE octets before its CRLF is legal; a cut between CR and LF must not refuse it."""
    line = b"sender=" + b"a" * (policy_protocol.MAX_LINE - 7) + b"\r\n\n"
    for sizes in ([len(line)], [policy_protocol.MAX_LINE + 1, 2]):
        assert same_either_way(policy_protocol.PolicyParser, line, sizes, policy_protocol.PolicyProtocolError)[0]


# --- netstrings (Postfix socketmap) -------------------------------------------------------------

NETSTRING_FRAGMENTS = [b"12:", b"sign alice@example.ac.uk", b",", b"0:,", b"100000:", b"100001:", b"01:", b":", b"9"]


@FUZZ
@given(wire(NETSTRING_FRAGMENTS), chunk_sizes)
def test_netstring_parser(data: bytes, sizes: list[int]) -> None:
    parser = netstring.NetstringParser()
    payloads, failed = run(parser.feed, cut(data, sizes), netstring.NetstringError)
    same_either_way(netstring.NetstringParser, data, sizes, netstring.NetstringError)
    assert all(len(p) <= netstring.MAX_NETSTRING for p in payloads)
    if not failed:  # waiting for at most one netstring, never more
        assert len(parser._buffer) <= netstring.MAX_NETSTRING + 8


# --- Exim readsocket ----------------------------------------------------------------------------

READSOCKET_FRAGMENTS = [
    b"verify ", b"sign ", b"authres ", b"VERIFY ", b"<>", b"<alice@example.ac.uk>", b"alice@example.ac.uk",
    b" ", b"\n", b"\r\n", b"\r", b"x" * 2100, b"\xc3\x28",
]


@FUZZ
@given(wire(READSOCKET_FRAGMENTS), chunk_sizes)
def test_readsocket_line_parser_and_requests(data: bytes, sizes: list[int]) -> None:
    whole_parser, parts_parser = readsocket_server.LineParser(), readsocket_server.LineParser()
    whole = whole_parser.feed(data) + whole_parser.finish()
    parts = [line for chunk in cut(data, sizes) for line in parts_parser.feed(chunk)] + parts_parser.finish()
    assert parts == whole and parts_parser.too_long == whole_parser.too_long
    assert len(parts_parser._buffer) < readsocket_server.MAX_LINE
    for line in whole:
        assert len(line) < readsocket_server.MAX_LINE
        try:
            request = readsocket_server.parse_request(line)
        except readsocket_server.RequestError:
            continue
        assert isinstance(request, readsocket_server.Verify | readsocket_server.Sign | readsocket_server.AuthRes)


# --- milter -------------------------------------------------------------------------------------

MILTER_FRAGMENTS = [
    milter_protocol.encode(milter_protocol.OPTNEG, struct.pack(">III", 6, 0x1FF, 0x1FFFFF)),
    milter_protocol.encode(milter_protocol.MAIL, b"<alice@example.ac.uk>\0"),
    milter_protocol.encode(milter_protocol.HEADER, b"From\0alice@example.ac.uk\0"),
    milter_protocol.encode(milter_protocol.BODYEOB),
    struct.pack(">I", 0), struct.pack(">I", milter_protocol.MAX_PACKET + 1), struct.pack(">I", 5), b"\0\0",
]


@FUZZ
@given(wire(MILTER_FRAGMENTS), chunk_sizes)
def test_milter_parser(data: bytes, sizes: list[int]) -> None:
    packets, _ = same_either_way(milter_protocol.MilterParser, data, sizes, milter_protocol.MilterProtocolError)
    for packet in packets:
        assert all(isinstance(s, str) for s in packet.strings())
        if packet.command == milter_protocol.OPTNEG:
            with contextlib.suppress(milter_protocol.MilterProtocolError):
                milter_protocol.optneg_reply(packet.data)


# --- HTTP ---------------------------------------------------------------------------------------

HTTP_FRAGMENTS = [
    b"GET /v1/verify?sender=alice%40example.ac.uk HTTP/1.1\r\n", b"POST /v1/verify HTTP/1.1\r\n",
    b"Host: x\r\n", b"Content-Length: 5\r\n", b"Content-Length: 99999\r\n", b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n", b"\r\n", b"\n\n", b'{"sender": ""}', b"x" * 8200, b"\xff",
]


@FUZZ
@given(wire(HTTP_FRAGMENTS), chunk_sizes)
def test_http_request_parser(data: bytes, sizes: list[int]) -> None:
    """The HTTP parser never raises: a malformed request sets `error`, answered then closed."""
    whole_parser, parts_parser = http_server.RequestParser(), http_server.RequestParser()
    whole = whole_parser.feed(data)
    parts = [request for chunk in cut(data, sizes) for request in parts_parser.feed(chunk)]
    assert (whole_parser.error is None) == (parts_parser.error is None), (data, sizes)
    if whole_parser.error is None:
        assert parts == whole
        assert len(parts_parser._buffer) <= http_server.MAX_HEAD + 4 + http_server.MAX_BODY
    else:
        assert parts_parser.error is not None and parts_parser.error.status == whole_parser.error.status
    for request in parts:
        assert len(request.body) <= http_server.MAX_BODY


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_every_parser_survives_random_bytes_fed_one_chunk_size_at_a_time(size: int) -> None:
    """A fixed pseudo-random stream, so a regression shows the same way on every run."""
    import random

    data = random.Random(7).randbytes(20_000)
    for factory, error in [
        (policy_protocol.PolicyParser, policy_protocol.PolicyProtocolError),
        (netstring.NetstringParser, netstring.NetstringError),
        (milter_protocol.MilterParser, milter_protocol.MilterProtocolError),
        (readsocket_server.LineParser, ValueError),
        (http_server.RequestParser, ValueError),
    ]:
        run(factory().feed, cut(data, [size]), error)


def test_http_head_of_the_largest_size_is_accepted_whatever_the_chunking() -> None:
    head = b"GET /healthz HTTP/1.1\r\nX: " + b"a" * (http_server.MAX_HEAD - 26) + b"\r\n\r\n"
    assert len(head) == http_server.MAX_HEAD + 4
    for sizes in ([len(head)], [1], [http_server.MAX_HEAD + 1, 1]):
        parser = http_server.RequestParser()
        requests = [request for chunk in cut(head, sizes) for request in parser.feed(chunk)]
        assert parser.error is None and len(requests) == 1
