"""DATA read in chunks (issue 7): the same message, the same refusals, wherever the reads are cut.

The session no longer reads the data a line at a time: `session.receive_data` takes what the
receiver's `lookahead` allows (an exact few octets where the end of data might be next, else up to
the next `CRLF.CRLF`), and `DataReceiver` handles each chunk at once. What must not change is
checked against `reference`, the rules written out a line at a time: the end of data, transparency,
bare CR and LF normalised and counted, the size and line limits (the first line over one decides,
size first), for any cut, including a line split across reads, a CR at the end of a read and the
end of data itself split across reads. And the reads never pass the end of data, nor wait for
octets a client that finished its message has no reason to send.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.submission.content import DataError, DataReceiver
from gateway.submission.session import receive_data

PIECES = [b"a", b"b" * 30, b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"\r\n.\r", b" "]
PIECES += [b"\n.\n", b"\r.\r", b"\n.\r\n"]
SMUGGLING = [b"\n.\n", b"\r.\r", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n", b"\n.\r", b"\r\n.\r"]
AFTER = b"MAIL FROM:<forged@example.ac.uk>\r\n"

Outcome = tuple[bytes, DataError | None, int, int]


def reference(stream: bytes, max_size: int, max_line: int) -> tuple[Outcome, bytes]:
    """RFC 5321 sections 4.1.1.4 and 4.5.2 and our limits, a line at a time: (outcome, what follows)."""
    if stream.startswith(b".\r\n"):
        return (b"", None, 0, 0), stream[3:]
    end = stream.index(b"\r\n.\r\n")
    message, error, size, bare = [], None, 0, 0
    for line in stream[: end + 2].split(b"\r\n")[:-1]:
        line = line[1:] if line.startswith(b".") else line
        bare += line.count(b"\r") + line.count(b"\n")
        piece = re.sub(rb"\r\n|\r|\n", b"\r\n", line) + b"\r\n"
        size += len(piece)
        if error is None and size > max_size:
            error = DataError.TOO_BIG
        elif error is None and any(len(part) > max_line for part in piece[:-2].split(b"\r\n")):
            error = DataError.LINE_TOO_LONG
        message.append(piece)
    return (b"".join(message) if error is None else b"", error, size, bare), stream[end + 5 :]


def outcome(receiver: DataReceiver) -> Outcome:
    return receiver.message, receiver.error, receiver.size, receiver.bare_line_ends


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, at, k = [], 0, 0
    while at < len(data):
        chunks.append(data[at : at + sizes[k % len(sizes)]])
        at, k = at + sizes[k % len(sizes)], k + 1
    return chunks


def fed(chunks: list[bytes], max_size: int, max_line: int) -> tuple[Outcome, bytes]:
    receiver = DataReceiver(max_size, max_line)
    for index, chunk in enumerate(chunks):
        rest = receiver.feed(chunk)
        if rest is not None:
            return outcome(receiver), rest + b"".join(chunks[index + 1 :])
    raise AssertionError("no end of data")


def read(chunks: list[bytes], max_size: int, max_line: int, limit: int) -> tuple[Outcome, bytes]:
    """`receive_data` on a StreamReader that gets `chunks` one loop turn apart: (outcome, what the
    reader still holds after the end of data)."""

    async def go() -> tuple[Outcome, bytes]:
        reader = asyncio.StreamReader(limit=limit)

        async def network() -> None:
            for chunk in chunks:
                reader.feed_data(chunk)
                await asyncio.sleep(0)
            reader.feed_eof()

        sender = asyncio.get_running_loop().create_task(network())
        receiver = DataReceiver(max_size, max_line)
        assert await receive_data(reader, receiver)
        await sender
        return outcome(receiver), await reader.read()

    return asyncio.run(go())


streams = st.tuples(
    st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join),
    st.sampled_from([b"\r\n.\r\n", b".\r\n"]),
    st.sampled_from([b"", b"QUIT\r\n", b".\r\n", b"\r\n.\r\n"]),
).map(lambda parts: parts[0] + (b"\r\n.\r\n" if parts[0] else parts[1]) + parts[2])
sizes = st.lists(st.integers(1, 12), min_size=1, max_size=6)


@settings(max_examples=400)
@given(streams, sizes, st.integers(5, 300), st.integers(3, 40))
def test_any_cut_of_the_stream_gives_the_reference_outcome(
    stream: bytes, chunk_sizes: list[int], max_size: int, max_line: int
) -> None:
    expected = reference(stream, max_size, max_line)
    assert fed([stream], max_size, max_line) == expected
    assert fed(cut(stream, chunk_sizes), max_size, max_line) == expected
    assert fed(cut(stream, [1]), max_size, max_line) == expected


@settings(max_examples=60, deadline=None)
@given(streams, sizes, st.integers(5, 300), st.integers(3, 40), st.sampled_from([5, 8, 64, 1001]))
def test_the_session_reads_stop_exactly_at_the_end_of_data(
    stream: bytes, chunk_sizes: list[int], max_size: int, max_line: int, limit: int
) -> None:
    (expected, after) = reference(stream, max_size, max_line)
    got, left = read(cut(stream, chunk_sizes), max_size, max_line, limit)
    assert got == expected
    assert left == after  # what the client sent after the end of data is still there for the command loop


@pytest.mark.parametrize("stream", [b".\r\n", b"x\r\n.\r\n", b"x\r\n\r\n.\r\n", b"..\r\n.\r\n", b"a\r\r\n.\r\n"])
@pytest.mark.parametrize("limit", [5, 1001])
def test_a_finished_message_is_never_waited_on(stream: bytes, limit: int) -> None:
    """The client sent its end of data and waits for the reply: no read may want more octets."""

    async def go() -> bytes:
        reader = asyncio.StreamReader(limit=limit)
        for octet in range(len(stream)):  # the worst case: every octet in its own segment
            reader.feed_data(stream[octet : octet + 1])
        receiver = DataReceiver(100, 998)
        assert await asyncio.wait_for(receive_data(reader, receiver), 2.0)
        return receiver.message

    assert asyncio.run(go()) == reference(stream, 100, 998)[0][0]


@pytest.mark.parametrize("ending", SMUGGLING)
@pytest.mark.parametrize("at", range(0, 8))
def test_smuggling_endings_split_anywhere_stay_content(ending: bytes, at: int) -> None:
    stream = b"Subject: x\r\n\r\nhello" + ending + AFTER + b"\r\n.\r\n"
    start = stream.index(ending)
    chunks = [stream[: start + at], stream[start + at :]]
    (message, error, _, bare), rest = fed(chunks, 1000, 998)
    assert error is None and rest == b"" and bare >= 1
    assert AFTER in message and message.count(b"\r") == message.count(b"\n") == message.count(b"\r\n")


@pytest.mark.parametrize("at", range(1, 5))
def test_the_end_of_data_split_across_reads_ends_the_message(at: int) -> None:
    stream = b"hello\r\n.\r\nNOOP\r\n"
    end = stream.index(b"\r\n.\r\n")
    (message, error, _, _), rest = fed([stream[: end + at], stream[end + at :]], 1000, 998)
    assert message == b"hello\r\n" and error is None and rest == b"NOOP\r\n"


@pytest.mark.parametrize(
    ("stream", "error"),
    [
        (b"a" * 81 + b"\r\n" + b"b" * 300 + b"\r\n.\r\n", DataError.LINE_TOO_LONG),  # the first line decides
        (b"a" * 150 + b"\r\n.\r\n", DataError.TOO_BIG),  # a line over both limits: too big
        (b"a" * 40 + b"\r\n" + b"a" * 81 + b"\n" + b"b" * 80 + b"\r\n.\r\n", DataError.TOO_BIG),
        (b"a" * 40 + b"\n" + b"b" * 80 + b"\r\n.\r\n", None),  # a bare LF ends an output line
    ],
)
@pytest.mark.parametrize("step", [1, 7, 80, 1000])
def test_the_first_line_over_a_limit_decides_whatever_the_reads(
    stream: bytes, error: DataError | None, step: int
) -> None:
    (message, found, _, _), _ = fed(cut(stream, [step]), 150, 80)
    assert found is error and (message == b"") == (error is not None)


def test_a_line_too_long_keeps_nothing_while_its_end_is_awaited() -> None:
    receiver = DataReceiver(10_000_000, 998)
    for _ in range(100):
        assert receiver.feed(b"x" * 10_000) is None
    assert receiver.message == b"" and receiver.error is None  # undecided: the line may yet be too big
    assert receiver.feed(b"\r\n.\r\n") == b""
    assert receiver.error is DataError.LINE_TOO_LONG
