"""The plain aiosmtpd sink: what the submission proxy's SMTP engine costs before it does any work.

`python -m bench.sink PORT [uvloop|asyncio]` runs aiosmtpd's own SMTP protocol (1.4, as the proxy
does) on the named event loop (default uvloop, as `antiforgery serve` runs) with a handler that
answers 250 to every message and keeps nothing: no AUTH, no TLS, no relaying. The submission proxy
is measured against it on the same loop (bench/submission.py): goal >= 0.6x its messages/s.
"""

from __future__ import annotations

import asyncio
import sys

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway import eventloop


class Discard:
    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 OK"


async def main(port: int) -> None:
    handler = Discard()
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: SMTP(handler, hostname="sink.bench", loop=loop), "127.0.0.1", port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    loop = sys.argv[2] if len(sys.argv) > 2 else eventloop.DEFAULT
    with asyncio.Runner(loop_factory=eventloop.loop_factory(loop)) as runner:
        runner.run(main(int(sys.argv[1])))
