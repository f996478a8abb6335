"""The milter codec and session, sans I/O: packets in any chunking, replies per command."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callout import milter_protocol as mp
from callout.milter_server import _connect_address


@given(
    st.lists(st.tuples(st.sampled_from([mp.MAIL, mp.RCPT, mp.HEADER]), st.binary(max_size=200)), max_size=6),
    st.integers(min_value=1, max_value=9),
)
def test_packets_parse_in_any_chunking(items: list[tuple[bytes, bytes]], step: int) -> None:
    wire = b"".join(mp.encode(c, d) for c, d in items)
    parser = mp.MilterParser()
    got: list[mp.Packet] = []
    for i in range(0, len(wire), step):
        got += parser.feed(wire[i : i + step])
    assert [(p.command, p.data) for p in got] == items


@pytest.mark.parametrize("length", [0, mp.MAX_PACKET + 1])
def test_out_of_range_lengths_are_refused(length: int) -> None:
    with pytest.raises(mp.MilterProtocolError):
        mp.MilterParser().feed(struct.pack(">I", length) + b"x")


def test_option_negotiation_asks_only_what_the_mta_offers() -> None:
    reply = mp.optneg_reply(struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
    version, actions, protocol = struct.unpack(">III", reply[5:])
    assert (version, actions) == (6, mp.ACTION_ADDHDRS | mp.ACTION_CHGHDRS)
    assert protocol == mp.PROTOCOL_SKIP
    with pytest.raises(mp.MilterProtocolError):
        mp.optneg_reply(b"\0\0\0\6")


def test_header_changes_are_nul_terminated_and_indexed() -> None:
    assert mp.change_header(2, "Authentication-Results", "") == mp.encode(b"m", b"\0\0\0\2Authentication-Results\0\0")
    assert mp.insert_header(0, "X", "a\0b") == mp.encode(b"i", b"\0\0\0\0X\0ab\0")


def test_connect_address_is_read_for_ip_families_only() -> None:
    assert _connect_address(b"client.example\x004\x04\x00192.0.2.1\x00") == "192.0.2.1"
    assert _connect_address(b"client.example\x006\x04\x002001:db8::1\x00") == "2001:db8::1"
    assert _connect_address(b"localhost\x00U") is None
