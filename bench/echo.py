"""The floor under every adapter: an echo server that does no work, on asyncio streams or a Protocol.

`python -m bench.echo streams|protocol PORT` answers each netstring `x` with `OK x`. The streams
variant runs on `callout.streams` exactly as our adapters do; the Protocol variant answers in
`data_received`, without a task per read. Their CPU per request is what an adapter costs before it
decides anything (bench/run prints both).
"""

from __future__ import annotations

import asyncio
import sys

from callout.netstring import NetstringParser, encode
from callout.streams import answer_each, serve


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.parser = NetstringParser()

    def data_received(self, data: bytes) -> None:
        for payload in self.parser.feed(data):
            self.transport.write(encode(b"OK " + payload))


async def main(kind: str, port: int) -> None:
    if kind == "streams":

        async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            parser = NetstringParser()
            await answer_each(reader, writer, parser.feed, lambda payload: encode(b"OK " + payload))

        await serve("echo", "127.0.0.1", port, session)
    else:
        await asyncio.get_running_loop().create_server(EchoProtocol, "127.0.0.1", port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
