"""Idle connections to the upstream MTA, kept for the next transaction (Postfix's connection cache).

Opening a connection to the upstream (TCP handshake, greeting, EHLO) cost about a sixth of the
proxy's CPU per message (issue 7). Postfix's SMTP client keeps a finished connection for the next
delivery to the same place (`smtp_connection_cache_on_demand`, idle for at most
`smtp_connection_cache_time_limit` = 2s, reused for `smtp_connection_reuse_time_limit` = 300s);
the proxy does the same with its one upstream:

  - `transaction` puts a connection back only at a clean protocol boundary (its docstring says
    which); `put` keeps it while it is `Upstream.reusable`, and `take` hands out the most recently
    used one, the least likely to have been closed by the upstream meanwhile;
  - an idle connection holds an smtpd process at the upstream, so a timer closes it politely
    (QUIT) after `idle_seconds`, and at `max_age` seconds after it was opened, whichever comes
    first: no connection is kept for ever (nor an upstream process with an old configuration);
  - at most `max_idle` are kept: putting back one more closes the one idle longest;
  - `close` (at shutdown) closes them all; a connection put back after that is dropped at once,
    without QUIT (the event loop may stop before a polite close could run).

The pool opens nothing and never talks to a connection while it holds it. A connection that died
while idle is dropped when it is taken if its end is already seen (closed, reset), and otherwise
found out by the MAIL sent on it, which `transaction` then sends once more on a new connection
(see `upstream` for why that retry is safe).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from .upstream import Upstream


@dataclass
class _Idle:
    upstream: Upstream
    timer: asyncio.TimerHandle


class UpstreamPool:
    def __init__(self, *, idle_seconds: float, max_age: float, max_idle: int) -> None:
        self.idle_seconds = idle_seconds
        self.max_age = max_age
        self.max_idle = max_idle
        self.closed = False
        self._idle: list[_Idle] = []  # the longest idle first
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._idle)

    def take(self) -> Upstream | None:
        """The most recently used idle connection that still looks sound, or None."""
        while self._idle:
            idle = self._idle.pop()
            idle.timer.cancel()
            if idle.upstream.reusable:
                return idle.upstream
            self._close_soon(idle.upstream)
        return None

    def put(self, upstream: Upstream) -> None:
        """Keep a connection at a clean boundary for the next transaction, or close it (in the background)."""
        if self.closed:  # shutting down: a polite QUIT's task might never run (the loop stops)
            upstream.drop()
            return
        keep = min(self.idle_seconds, upstream.opened_at + self.max_age - time.monotonic())
        if keep <= 0 or not upstream.reusable:
            self._close_soon(upstream)
            return
        timer = asyncio.get_running_loop().call_later(keep, self._expire, upstream)
        self._idle.append(_Idle(upstream, timer))
        if len(self._idle) > self.max_idle:
            oldest = self._idle.pop(0)
            oldest.timer.cancel()
            self._close_soon(oldest.upstream)

    async def close(self) -> None:
        """Close every idle connection, and wait for those being closed."""
        self.closed = True
        for idle in self._idle:
            idle.timer.cancel()
            self._close_soon(idle.upstream)
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _expire(self, upstream: Upstream) -> None:
        self._idle = [idle for idle in self._idle if idle.upstream is not upstream]
        self._close_soon(upstream)

    def _close_soon(self, upstream: Upstream) -> None:
        task = asyncio.get_running_loop().create_task(upstream.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
