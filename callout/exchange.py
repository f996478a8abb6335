"""What every request/reply adapter shares: a connection that turns bytes into requests and replies in order.

Each adapter (policy, socketmap, readsocket, milter, HTTP) is a sans-I/O `Exchange`: `feed` parses
bytes into requests, `respond` answers one. This module runs exchanges on a socket as an asyncio
Protocol: a reply is written from `data_received` itself, with no task, future or timeout object
per request. That is most of an adapter's cost once deciding is cheap (issue 7: an echo on asyncio
streams cost 70 us of CPU per request, as a Protocol 47 us; postsrsd's whole request costs 41 us).

Rules every adapter gets from here, so that none can get them wrong:
  - replies go out in request order, also when a reply must be awaited (the policy adapter's
    call-forward): reading pauses until it is written;
  - a client that does not read its replies is neither read from nor answered until it does
    (write-buffer limits), and one that never reads them after the close is aborted;
  - a client silent for `IDLE_SECONDS` is dropped, and so is one that sends that long without
    completing a request (Postfix writes each request at once; a byte now and then is an attack);
  - a `ValueError` from `feed` (every parser's protocol error is one) closes the connection without a
    reply: for these protocols, closing is the only error signal the peer understands;
  - `CloseConnection` from `respond` ends the session after its optional last reply (QUIT, a fatal
    error line); an unexpected exception is logged and the connection closed, never answered with
    a guess.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

log = logging.getLogger("antiforgery.server")

#: A client silent this long is dropped; Postfix's own policy client gives up after 100 s.
IDLE_SECONDS = 300.0


class CloseConnection(Exception):
    """Raised by `respond` to end the session, as a protocol's QUIT does, after `reply` if any."""

    def __init__(self, reply: bytes = b"") -> None:
        super().__init__()
        self.reply = reply


class Exchange(Protocol):
    """One connection's protocol state, without I/O."""

    def feed(self, data: bytes) -> list[Any]:
        """Requests completed by `data`; ValueError if the peer broke the protocol."""

    def respond(self, request: Any) -> bytes | Awaitable[bytes]:
        """The reply to one request (awaitable only where the answer needs I/O)."""

    def finish(self) -> list[Any]:
        """Requests left when the peer shut down its sending side; answered before closing."""


#: Makes the state for one new connection.
Exchanges = Callable[[], Exchange]


class ExchangeProtocol(asyncio.Protocol):
    def __init__(self, name: str, exchange: Exchange, idle_seconds: float) -> None:
        self.name = name
        self.exchange = exchange
        self.idle_seconds = idle_seconds
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.last_read = self.loop.time()
        self.partial_since: float | None = None  # when the first byte of an incomplete request came
        self.idle: asyncio.TimerHandle | None = None
        self.abort_timer: asyncio.TimerHandle | None = None
        #: Requests not answered yet: behind an awaited reply, or held while the peer reads nothing.
        self.waiting: collections.deque[Any] = collections.deque()
        self.awaiting: asyncio.Task[None] | None = None
        self.write_paused = False
        self.eof = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport subclass
        self.idle = self.loop.call_later(self.idle_seconds, self._idle_check)

    def data_received(self, data: bytes) -> None:
        self.last_read = now = self.loop.time()  # one clock read, not a timer rescheduled per request
        try:
            requests = self.exchange.feed(data)
        except ValueError:
            self._close()
            return
        if requests:
            self.partial_since = None
        elif self.partial_since is None:
            self.partial_since = now
        if self.awaiting is not None or self.write_paused or self.waiting:
            self.waiting.extend(requests)
        else:
            self._answer(requests)

    def eof_received(self) -> bool:
        """The peer will send no more (Exim's readsocket shuts down after its request): answer, then close."""
        self.eof = True
        with contextlib.suppress(ValueError):  # a broken last request gets no answer, as any other
            self.waiting.extend(self.exchange.finish())
        if self.awaiting is None and not self.write_paused:
            self._continue()
        return True  # keep the transport open for the replies; _continue closes it once all are out

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self.idle, self.abort_timer):
            if timer is not None:
                timer.cancel()
        if self.awaiting is not None:
            self.awaiting.cancel()
        self.waiting.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        self._reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.awaiting is None:
            self._continue()

    # -- answering --------------------------------------------------------------------------

    def _answer(self, requests: Iterable[Any]) -> None:
        """Answer in order. Stop at a reply that must be awaited, or once the peer stops reading
        ours (one read may hold many pipelined requests), keeping the rest in `waiting`."""
        transport = self.transport
        assert transport is not None
        respond = self.exchange.respond
        pending = iter(requests)
        for request in pending:
            if transport.is_closing():
                return
            if self.write_paused:
                self.waiting.extendleft(reversed([request, *pending]))
                return
            try:
                reply = respond(request)
            except CloseConnection as close:
                transport.write(close.reply)
                self._close()
                return
            except Exception:
                log.exception("%s: session failed", self.name)
                self._close()
                return
            if type(reply) is bytes:
                transport.write(reply)
            else:
                self.waiting.extendleft(reversed(list(pending)))
                self.awaiting = self.loop.create_task(self._await(reply))  # type: ignore[arg-type]
                self._reading()
                return

    def _continue(self) -> None:
        """Answer what waited; then read on, or close if the peer has shut down and all is answered."""
        if self.transport is None or self.transport.is_closing():
            return
        waiting, self.waiting = self.waiting, collections.deque()
        self._answer(waiting)
        if self.awaiting is None and not self.write_paused and not self.waiting and self.eof:
            self._close()
        else:
            self._reading()

    async def _await(self, reply: Awaitable[bytes]) -> None:
        try:
            data = await reply
        except CloseConnection as close:
            self._write_and_close(close.reply)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: session failed", self.name)
            self._close()
            return
        finally:
            self.awaiting = None
        assert self.transport is not None
        if self.transport.is_closing():
            return
        self.transport.write(data)
        if not self.write_paused:
            self._continue()

    def _write_and_close(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
        self._close()

    # -- connection state -------------------------------------------------------------------

    def _reading(self) -> None:
        """Read only while no reply is awaited, none waits, and the peer is reading ours."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.eof:
            return
        if self.awaiting is not None or self.write_paused or self.waiting:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _idle_check(self) -> None:
        """Drop the client once it has been silent for `idle_seconds`, or has sent that long without
        completing a request (a byte now and then would otherwise hold the connection for ever),
        unless we owe it a reply."""
        now = self.loop.time()
        idle_left = self.last_read + self.idle_seconds - now
        request_left = self.idle_seconds if self.partial_since is None else self.partial_since + self.idle_seconds - now
        if self.awaiting is None and (idle_left <= 0 or request_left <= 0):
            self._close()
            return
        delay = min(idle_left, request_left)
        self.idle = self.loop.call_later(delay if delay > 0 else self.idle_seconds, self._idle_check)

    def _close(self) -> None:
        """Close after the replies are out; a peer that does not read them within `idle_seconds`
        would hold the connection and its buffer for ever (close waits for the flush): abort it."""
        if self.transport is None:
            return
        if not self.transport.is_closing():
            self.transport.close()
            self.abort_timer = self.loop.call_later(self.idle_seconds, self.transport.abort)


async def serve(
    name: str, host: str, port: int, exchanges: Exchanges, idle_seconds: float = IDLE_SECONDS
) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ExchangeProtocol(name, exchanges(), idle_seconds), host, port, reuse_address=True
    )
    log.info("%s listening on %s", name, ", ".join(str(s.getsockname()) for s in server.sockets))
    return server
