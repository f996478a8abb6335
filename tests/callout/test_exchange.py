"""callout.exchange: the connection rules every adapter gets, on a real loopback socket with a toy exchange.

The rules are proven on both event loops `serve` can run on (gateway/eventloop.py): uvloop's
transports buffer, pause and close in their own code, not in asyncio's.

Requests are lines; `respond` echoes them, except: `slow` is answered after a delay (an awaited
reply, as the policy adapter's call-forward), `quit` ends the session with a last reply, `boom`
is a bug in the adapter, `bad` is a protocol error in `feed`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Iterator

import pytest

from callout.exchange import CloseConnection, serve
from gateway import eventloop


class Lines:
    fed = 0

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        if b"bad" in lines:
            raise ValueError("not our protocol")
        Lines.fed += len(lines)
        return lines

    def respond(self, line: bytes) -> bytes | Awaitable[bytes]:
        if line == b"slow":
            return self._slow()
        if line == b"quit":
            raise CloseConnection(b"bye\n")
        if line == b"boom":
            raise RuntimeError("a bug")
        if line.startswith(b"big"):
            return line + b"x" * 20_000 + b"\n"
        return line + b"\n"

    async def _slow(self) -> bytes:
        await asyncio.sleep(0.2)
        return b"slow done\n"

    def finish(self) -> list[bytes]:
        rest, self.buffer = self.buffer, b""
        return [rest] if rest else []


class Server:
    def __init__(self, idle_seconds: float = 30.0, loop: str = eventloop.DEFAULT) -> None:
        self.loop = eventloop.new_event_loop(loop)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        future = asyncio.run_coroutine_threadsafe(serve("toy", "127.0.0.1", 0, Lines, idle_seconds), self.loop)
        self.server = future.result(5)
        self.port = self.server.sockets[0].getsockname()[1]

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(params=eventloop.LOOPS)
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    running = Server(loop=request.param)
    yield running
    running.stop()


def read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes the connection."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_replies_keep_request_order_when_one_must_be_awaited(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"one\nslow\ntwo\n")
        time.sleep(0.05)
        sock.sendall(b"three\nquit\n")  # arrives while the slow reply is still awaited
        assert read_all(sock) == b"one\nslow done\ntwo\nthree\nbye\n"


def test_a_protocol_error_closes_without_a_reply(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"bad\n")
        assert read_all(sock) == b""


def test_a_bug_in_the_adapter_closes_the_connection_and_is_logged(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with server.connect() as sock:
        sock.sendall(b"one\nboom\ntwo\n")
        assert read_all(sock) == b"one\n"
    assert "toy: session failed" in caplog.text


def test_requests_before_the_peer_shuts_down_are_answered_then_closed(server: Server) -> None:
    with server.connect() as sock:
        sock.sendall(b"slow\nlast line without LF")
        sock.shutdown(socket.SHUT_WR)  # as Exim's readsocket does
        assert read_all(sock) == b"slow done\nlast line without LF\n"


@pytest.mark.parametrize("loop", eventloop.LOOPS)
def test_a_silent_client_is_dropped_and_a_talking_one_kept(loop: str) -> None:
    running = Server(idle_seconds=0.3, loop=loop)
    try:
        with running.connect() as silent, running.connect() as talking:
            started = time.monotonic()
            for n in range(8):
                talking.sendall(b"ping%d\n" % n)
                assert talking.recv(100) == b"ping%d\n" % n
                time.sleep(0.1)
            assert read_all(silent) == b""  # closed by the server, not by the socket timeout
            assert 0.3 <= time.monotonic() - started < 5
            talking.sendall(b"still here\n")
            assert talking.recv(100) == b"still here\n"
    finally:
        running.stop()


def test_a_client_that_does_not_read_its_replies_is_not_read_from(server: Server) -> None:
    """Replies of 20 kB to 1 kB requests: without back-pressure the server would buffer ~60 MB."""
    total = 3000
    request = b"big" + b"r" * 1000 + b"\n"
    with server.connect() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        Lines.fed = 0
        sender = threading.Thread(target=sock.sendall, args=(request * total,))
        sender.start()
        time.sleep(1.0)
        assert Lines.fed < total, "the server kept reading although its replies were not read"
        received = 0
        expected = (len(request) - 1 + 20_000 + 1) * total
        while received < expected:
            chunk = sock.recv(1 << 20)
            assert chunk
            received += len(chunk)
        sender.join(5)
        assert Lines.fed == total


def server_connections(port: int) -> list[str]:
    """TCP states (hex, /proc/net/tcp) of the server's side of its connections, listener excluded."""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return [row[3] for row in rows if int(row[1].rsplit(":", 1)[1], 16) == port and row[3] != "0A"]


@pytest.mark.parametrize("loop", eventloop.LOOPS)
def test_a_client_that_never_reads_its_replies_is_aborted_not_kept(loop: str) -> None:
    """close() waits for the replies to be flushed; a peer that never reads them would hold the
    connection and its buffer for ever, so it is aborted an idle time after the close. 40 MB of
    replies are asked for: more than the kernel's socket buffers can take off the server."""
    running = Server(idle_seconds=0.3, loop=loop)
    try:
        with running.connect() as sock:
            sock.sendall((b"big" + b"r" * 100 + b"\n") * 2000)
            time.sleep(0.1)
            assert server_connections(running.port) == ["01"]  # established, replies piling up
            time.sleep(1.4)  # idle close at ~0.3 s, abort at ~0.6 s
            assert server_connections(running.port) == [], "the server still holds the connection"
    finally:
        running.stop()
