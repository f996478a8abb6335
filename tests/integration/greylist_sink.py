"""A greylisting next hop for the tests: a tiny SMTP server that defers the first try of each triplet.

Greylisting (RFC 6647 section 2.1) answers a temporary failure to the first delivery attempt of
each (sender, recipient, client address) triplet and accepts a retry of the same triplet. A sender
signed anew at each attempt would be a new triplet every time and never get through: that is what
design invariant 1 ("every delivery attempt carries the same envelope sender") protects. The sink
records each transaction's MAIL command as the octets it received, so a test can compare attempts
byte for byte. No PIPELINING or other extension is offered: the client's commands arrive one at a
time, and the sink's replies are the whole conversation.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field

_PATH = re.compile(rb"<([^>]*)>")


@dataclass
class Attempt:
    """One MAIL transaction: its command line, each RCPT with the code we answered, its data if taken."""

    mail: bytes
    recipients: list[tuple[bytes, int]] = field(default_factory=list)
    data: bytes | None = None


def _path(line: bytes) -> bytes:
    match = _PATH.search(line)
    return match[1].lower() if match else b""


class GreylistSink:
    def __init__(self) -> None:
        self.attempts: list[Attempt] = []
        self._seen: set[tuple[bytes, bytes, str]] = set()
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._session, "127.0.0.1", 0), self.loop
        ).result(10)
        self.port = int(self.server.sockets[0].getsockname()[1])

    def _triplet_seen(self, sender: bytes, recipient: bytes, client: str) -> bool:
        with self._lock:
            seen = (sender, recipient, client) in self._seen
            self._seen.add((sender, recipient, client))
            return seen

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = str(writer.get_extra_info("peername")[0])
        attempt: Attempt | None = None

        def reply(text: str) -> None:
            writer.write(text.encode() + b"\r\n")

        reply("220 greylist.test ESMTP")
        try:
            while line := await reader.readline():
                line = line.rstrip(b"\r\n")
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    reply("250 greylist.test")
                elif verb == b"MAIL":
                    attempt = Attempt(line)
                    with self._lock:
                        self.attempts.append(attempt)
                    reply("250 2.1.0 Ok")
                elif verb == b"RCPT" and attempt is not None:
                    if self._triplet_seen(_path(attempt.mail), _path(line), client):
                        attempt.recipients.append((line, 250))
                        reply("250 2.1.5 Ok")
                    else:
                        attempt.recipients.append((line, 451))
                        reply("451 4.7.1 Greylisted: please try again later")
                elif verb == b"DATA" and attempt is not None and any(c == 250 for _, c in attempt.recipients):
                    reply("354 End data with <CR><LF>.<CR><LF>")
                    await writer.drain()
                    attempt.data = await reader.readuntil(b"\r\n.\r\n")
                    reply("250 2.0.0 Ok: queued")
                elif verb == b"DATA":
                    reply("554 5.5.1 No valid recipients")
                elif verb in (b"RSET", b"NOOP"):
                    attempt = None if verb == b"RSET" else attempt
                    reply("250 2.0.0 Ok")
                elif verb == b"QUIT":
                    reply("221 2.0.0 Bye")
                    break
                else:
                    reply("502 5.5.2 Command not recognised")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self.attempts)

    def wait_delivered(self, count: int = 1, timeout: float = 20.0) -> list[Attempt]:
        """Every attempt so far, once `count` messages were accepted or the time is up."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if sum(a.data is not None for a in self.snapshot()) >= count:
                break
            time.sleep(0.1)
        time.sleep(0.5)  # a duplicate delivery would show up now
        return self.snapshot()

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
