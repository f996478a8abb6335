"""DATA in and out without sockets: only CRLF.CRLF ends a message, bare CR/LF become CRLF, dots are stuffed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.submission.content import DataError, DataReceiver, encode_for_data, normalise

SMUGGLED = b"MAIL FROM:<forged@example.ac.uk>\r\nRCPT TO:<victim@other.org>\r\nDATA\r\nforged\r\n.\r\n"


def receive(stream: bytes, max_size: int = 100_000, max_line: int = 998, step: int = 0) -> tuple[DataReceiver, bytes]:
    receiver = DataReceiver(max_size, max_line)
    chunks = [stream[i : i + step] for i in range(0, len(stream), step)] if step else [stream]
    for index, chunk in enumerate(chunks):
        rest = receiver.feed(chunk)
        if rest is not None:
            return receiver, rest + b"".join(chunks[index + 1 :])
    raise AssertionError("no end of data")


def test_the_end_of_data_and_transparency() -> None:
    receiver, rest = receive(b"Subject: x\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n")
    assert receiver.message == b"Subject: x\r\n\r\n.leading dot\r\nbody\r\n"
    assert rest == b"QUIT\r\n" and receiver.error is None


def test_an_empty_message_ends_at_once() -> None:
    receiver, rest = receive(b".\r\n")
    assert receiver.message == b"" and rest == b""


@pytest.mark.parametrize("ending", [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\n.\r"])
@pytest.mark.parametrize("step", [0, 1, 3])
def test_smuggling_endings_are_content_not_an_end(ending: bytes, step: int) -> None:
    receiver, rest = receive(b"Subject: x\r\n\r\nhello" + ending + SMUGGLED, step=step)
    assert rest == b""
    message = receiver.message
    assert b"MAIL FROM:<forged@example.ac.uk>\r\n" in message
    assert message.count(b"\r") == message.count(b"\n") == message.count(b"\r\n")
    assert receiver.bare_line_ends >= 1
    wire = encode_for_data(message)
    assert wire.count(b"\r\n.\r\n") == 1 and wire.endswith(b"\r\n.\r\n")  # one end, ours


def test_encoding_stuffs_every_leading_dot_and_normalises_again() -> None:
    assert encode_for_data(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n.\r\n"
    assert encode_for_data(b"a\n.\nb") == b"a\r\n..\r\nb\r\n.\r\n"
    assert encode_for_data(b"") == b".\r\n"
    assert normalise(b"a\rb\nc\r\nd\r\r\n") == b"a\r\nb\r\nc\r\nd\r\n\r\n"


def test_size_limit_reads_to_the_end_and_keeps_nothing() -> None:
    receiver, rest = receive(b"x" * 50 + b"\r\n" + b"y" * 60 + b"\r\n.\r\nNOOP\r\n", max_size=100)
    assert receiver.error is DataError.TOO_BIG and receiver.message == b"" and rest == b"NOOP\r\n"


def test_line_limit_counts_normalised_lines() -> None:
    ok, _ = receive(b"a" * 80 + b"\n" + b"b" * 80 + b"\r\n.\r\n", max_line=80)
    assert ok.error is None
    long, _ = receive(b"a" * 81 + b"\r\n.\r\n", max_line=80, step=7)
    assert long.error is DataError.LINE_TOO_LONG


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"MAIL", b" "]), max_size=40), st.integers(1, 9))
def test_any_content_comes_out_as_exactly_one_message(pieces: list[bytes], step: int) -> None:
    receiver, _ = receive(b"".join(pieces) + b"\r\n.\r\n", step=step)
    wire = encode_for_data(receiver.message)
    # Whatever a next hop takes for a line end, the only line that is a lone dot is the last one.
    lines = wire.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    assert [i for i, line in enumerate(lines) if line == b"."] == [len(lines) - 2]
