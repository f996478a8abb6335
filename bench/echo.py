"""The floor under every adapter: an echo server that decides nothing, on asyncio streams or as our adapters run.

`python -m bench.echo streams|protocol PORT [uvloop|asyncio]` answers each netstring `x` with `OK x`
on the named event loop (default uvloop, as `antiforgery serve` runs). "protocol" runs
on `callout.exchange`, exactly as our adapters do (an asyncio Protocol answering in `data_received`);
"streams" reads and writes through asyncio streams with a task per connection, as the adapters did
before issue 7 measured the difference. Their CPU per request is what an adapter costs before it
decides anything (bench/run prints both).
"""

from __future__ import annotations

import asyncio
import sys

from callout.exchange import serve
from callout.netstring import NetstringParser, encode
from gateway import eventloop


class Echo:
    def __init__(self) -> None:
        self.parser = NetstringParser()

    def feed(self, data: bytes) -> list[bytes]:
        return self.parser.feed(data)

    def respond(self, payload: bytes) -> bytes:
        return encode(b"OK " + payload)

    def finish(self) -> list[bytes]:
        return []


async def echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    echo = Echo()
    while data := await reader.read(8192):
        for payload in echo.feed(data):
            writer.write(echo.respond(payload))
        await writer.drain()
    writer.close()


async def main(kind: str, port: int) -> None:
    if kind == "streams":
        await asyncio.start_server(echo_stream, "127.0.0.1", port, reuse_address=True)
    else:
        await serve("echo", "127.0.0.1", port, Echo)
    await asyncio.Event().wait()


if __name__ == "__main__":
    loop = sys.argv[3] if len(sys.argv) > 3 else eventloop.DEFAULT
    with asyncio.Runner(loop_factory=eventloop.loop_factory(loop)) as runner:
        runner.run(main(sys.argv[1], int(sys.argv[2])))
