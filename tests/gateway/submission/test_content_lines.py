"""The shortcuts in `content` (issue 7, profiled): they change nothing but the time taken.

The receiver takes a chunk of any size at once (the session reads chunks: test_content_chunks);
fed a line at a time, as the session once did, or all at once, message, size, limits and bare line
ends agree.
`normalise` and `encode_for_data` skip their regular-expression rewrites when nothing would change.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.submission.content import DataError, DataReceiver, encode_for_data, normalise

PIECES = [b"a", b"b" * 30, b".", b"..", b"\r", b"\n", b"\r\n", b"MAIL", b" ", b"\r\n.\n", b"\n.\r\n"]


def state(receiver: DataReceiver) -> tuple[object, ...]:
    return receiver.message, receiver.error, receiver.size, receiver.bare_line_ends


def whole(stream: bytes, max_size: int, max_line: int) -> tuple[tuple[object, ...], bytes]:
    receiver = DataReceiver(max_size, max_line)
    rest = receiver.feed(stream)
    assert rest is not None
    return state(receiver), rest


def by_lines(stream: bytes, max_size: int, max_line: int) -> tuple[tuple[object, ...], bytes]:
    """As the session: each chunk up to and including a CRLF (the last one may be partial)."""
    receiver = DataReceiver(max_size, max_line)
    chunks = re.findall(rb".*?\r\n|.+", stream, re.DOTALL)
    for index, chunk in enumerate(chunks):
        rest = receiver.feed(chunk)
        if rest is not None:
            return state(receiver), rest + b"".join(chunks[index + 1 :])
    raise AssertionError("no end of data")


@given(st.lists(st.sampled_from(PIECES), max_size=60), st.integers(20, 400), st.integers(5, 40))
def test_line_by_line_agrees_with_one_piece(pieces: list[bytes], max_size: int, max_line: int) -> None:
    stream = b"".join(pieces) + b"\r\n.\r\nQUIT\r\n"
    assert by_lines(stream, max_size, max_line) == whole(stream, max_size, max_line)


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (b"x" * 50 + b"\r\n" + b"y" * 60 + b"\r\n.\r\n", DataError.TOO_BIG),
        (b"short\r\n" + b"z" * 81 + b"\r\n.\r\n", DataError.LINE_TOO_LONG),
        (b"ok\r\n" * 3 + b".\r\n", None),
    ],
)
def test_ordinary_lines_meet_the_limits(stream: bytes, error: DataError | None) -> None:
    (message, found, _, _), rest = by_lines(stream, 100, 80)
    assert found is error and rest == b""
    assert message == (b"ok\r\n" * 3 if error is None else b"")


@given(st.lists(st.sampled_from(PIECES), max_size=60))
def test_the_shortcuts_change_nothing(pieces: list[bytes]) -> None:
    """normalise and encode_for_data skip their rewrites when there is nothing to rewrite."""
    data = b"".join(pieces)
    expected = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    assert normalise(data) == expected
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert encode_for_data(data) == re.sub(rb"^\.", b"..", expected, flags=re.MULTILINE) + b".\r\n"
