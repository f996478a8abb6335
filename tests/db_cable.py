"""A cable between our services and the real PostgreSQL server that a test can pull and plug back in.

Stopping the shared test server would break every other test running against it; to its clients a
stopped server is a refused connection and the loss of every open one, and that is what `cut`
does: the relay stops listening and drops what it carries. `mend` listens again on the same port,
as a restarted server does. Everything behind the cable is the real server.
"""

from __future__ import annotations

import asyncio

from loopback_server import LoopbackServer
from sqlalchemy.engine import make_url


class Cable(LoopbackServer):
    """A TCP relay on a loopback port to `target`: ("unix", path) or ("tcp", host, port)."""

    abort_on_drop = True  # a server gone away resets what it carried

    def __init__(self, target: tuple[str, ...]) -> None:
        super().__init__()
        self.target = target
        self.listen()

    @classmethod
    def to_postgresql(cls, url: str) -> tuple[Cable, str]:
        """A cable to the server of `url`, and the URL that reaches the same database through it."""
        parsed = make_url(url)
        socket_dir = parsed.query.get("host")
        if isinstance(socket_dir, str) and socket_dir.startswith("/"):
            target: tuple[str, ...] = ("unix", f"{socket_dir}/.s.PGSQL.{parsed.port or 5432}")
        else:
            target = ("tcp", parsed.host or "127.0.0.1", str(parsed.port or 5432))
        cable = cls(target)
        query = {k: v for k, v in parsed.query.items() if k != "host"}
        through = parsed.set(host="127.0.0.1", port=cable.port, query=query)
        return cable, through.render_as_string(hide_password=False)

    def mend(self) -> None:
        self.listen()

    def cut(self) -> None:
        self.drop()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.target[0] == "unix":
            return await asyncio.open_unix_connection(self.target[1])
        return await asyncio.open_connection(self.target[1], int(self.target[2]))

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await self._open()
        except OSError:
            client_writer.transport.abort()
            return
        self.writers |= {client_writer, server_writer}

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.transport.abort()
                self.writers.discard(writer)

        await asyncio.gather(pump(client_reader, server_writer), pump(server_reader, client_writer))
