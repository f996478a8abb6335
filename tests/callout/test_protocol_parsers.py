"""The sans-I/O parsers: policy attributes and netstrings, fed byte by byte and in bulk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callout.netstring import MAX_NETSTRING, NetstringError, NetstringParser, encode
from callout.policy_protocol import MAX_LINE, PolicyParser, PolicyProtocolError, format_reply

REQUEST = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=alice@example.ac.uk\n"
    b"recipient=bob@other.org\nclient_address=192.0.2.1\n\n"
)


def test_policy_request_split_anywhere_parses_the_same() -> None:
    for cut in range(len(REQUEST)):
        parser = PolicyParser()
        got = parser.feed(REQUEST[:cut]) + parser.feed(REQUEST[cut:])
        assert got == [
            {
                "request": "smtpd_access_policy",
                "protocol_state": "RCPT",
                "sender": "alice@example.ac.uk",
                "recipient": "bob@other.org",
                "client_address": "192.0.2.1",
            }
        ]


def test_two_pipelined_requests_and_empty_values() -> None:
    got = PolicyParser().feed(b"sender=\nrecipient=a@b.org\n\nsender=x@y.org\n\n")
    assert got == [{"sender": "", "recipient": "a@b.org"}, {"sender": "x@y.org"}]


def test_value_may_contain_equals_signs() -> None:
    assert PolicyParser().feed(b"sender=prvs=1234abcdef=a@b.org\n\n") == [{"sender": "prvs=1234abcdef=a@b.org"}]


@pytest.mark.parametrize("data", [b"no equals sign\n", b"=value\n", b"x" * (MAX_LINE + 2)])
def test_malformed_policy_input_is_refused(data: bytes) -> None:
    with pytest.raises(PolicyProtocolError):
        PolicyParser().feed(data)


def test_too_many_attributes_is_refused() -> None:
    with pytest.raises(PolicyProtocolError):
        PolicyParser().feed(b"".join(b"a%d=1\n" % i for i in range(200)))


def test_reply_cannot_be_split_by_newlines_in_the_reason() -> None:
    assert format_reply("REJECT bad\r\naction=OK") == b"action=REJECT bad  action=OK\n\n"


@given(st.lists(st.binary(max_size=300), max_size=5), st.integers(min_value=1, max_value=7))
def test_netstrings_round_trip_in_any_chunking(payloads: list[bytes], step: int) -> None:
    wire = b"".join(encode(p) for p in payloads)
    parser = NetstringParser()
    got: list[bytes] = []
    for i in range(0, len(wire), step):
        got += parser.feed(wire[i : i + step])
    assert got == payloads


@pytest.mark.parametrize("data", [b"abc:", b"5:hello!", b"05:hello,", b"%d:" % (MAX_NETSTRING + 1), b"1234567x"])
def test_malformed_netstrings_are_refused(data: bytes) -> None:
    with pytest.raises(NetstringError):
        NetstringParser().feed(data)


def test_a_policy_parser_told_what_to_keep_drops_the_rest_but_still_counts_it() -> None:
    parser = PolicyParser(keep=frozenset({b"sender"}))
    assert parser.feed(b"sender=a@b.org\nccert_subject=x\n\nccert_subject=y\n\n") == [
        {"sender": "a@b.org"},
        {},
    ]
    with pytest.raises(PolicyProtocolError):
        PolicyParser(keep=frozenset({b"sender"})).feed(b"".join(b"a%d=1\n" % i for i in range(200)))
