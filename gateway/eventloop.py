"""Which asyncio event loop `antiforgery serve` runs on: uvloop unless told otherwise.

Every request to the adapters is a read callback, a decision and a write on a loopback socket,
so the loop's own cost per callback is a large part of the whole (issue 7, docs/benchmarks.md:
an echo that decides nothing cost more on the standard loop than postsrsd's whole request).
uvloop runs the same asyncio protocols on libuv, in compiled code, and changes nothing we rely
on: transports, `start_tls` for the proxy's STARTTLS, signal handlers, `asyncio.to_thread`.

The standard loop stays one option away (`antiforgery serve --event-loop asyncio`): for a
platform without uvloop, and to tell a loop bug from ours.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

LOOPS = ("uvloop", "asyncio")
DEFAULT = "uvloop"


def loop_factory(name: str = DEFAULT) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making a new loop of the named kind; ValueError names what is missing."""
    if name == "asyncio":
        return asyncio.new_event_loop
    if name != "uvloop":
        raise ValueError(f"unknown event loop {name!r}: choose one of {', '.join(LOOPS)}")
    try:
        import uvloop
    except ImportError:
        raise ValueError("uvloop is not installed: install it, or run with --event-loop asyncio") from None
    return uvloop.new_event_loop


def new_event_loop(name: str = DEFAULT) -> asyncio.AbstractEventLoop:
    return loop_factory(name)()


def open_for_writing(transport: asyncio.BaseTransport | None) -> asyncio.WriteTransport | None:
    """The transport if it can still take a write, else None.

    Never `isinstance(transport, asyncio.WriteTransport)`: uvloop's transports subclass none of
    asyncio's transport classes, so such a check is silently false under uvloop (a 421 that was
    never sent, found by the tests when `serve` moved to uvloop).
    """
    if transport is None or transport.is_closing():
        return None
    return cast(asyncio.WriteTransport, transport)
