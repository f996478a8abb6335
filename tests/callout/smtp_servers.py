"""SMTP servers on loopback for the callout tests: scripted aiosmtpd handlers, refusing and silent servers."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP, Envelope, Session

T = TypeVar("T")


class Scripted:
    """An aiosmtpd handler that answers RCPT as told and records the dialogue it saw."""

    def __init__(self, rcpt_reply: str = "250 2.1.5 OK", ehlo: bool = True) -> None:
        self.rcpt_reply = rcpt_reply
        self.ehlo = ehlo
        self.seen: list[str] = []

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        self.seen.append(f"EHLO {hostname}")
        if not self.ehlo:
            return ["502 5.5.2 EHLO not implemented here"]
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope, hostname: str) -> str:
        self.seen.append(f"HELO {hostname}")
        session.host_name = hostname
        return "250 dept.test"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.seen.append(f"MAIL {address}")
        envelope.mail_from = address
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        self.seen.append(f"RCPT {address}")
        return self.rcpt_reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.seen.append("DATA")
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.seen.append("QUIT")
        return "221 Bye"


class Servers:
    """SMTP servers on loopback in a background event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.Server] = []

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def _keep(self, server: asyncio.Server) -> int:
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    def smtp(self, handler: Any, host: str = "127.0.0.1", greeting: str | None = None, port: int = 0) -> int:
        async def start() -> asyncio.Server:
            loop = asyncio.get_running_loop()
            return await loop.create_server(lambda: SMTP(handler, hostname="dept.test", loop=loop), host, port)

        if greeting is None:
            return self._keep(self.call(start()))

        async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(greeting.encode() + b"\r\n")
            await writer.drain()
            writer.close()

        return self._keep(self.call(asyncio.start_server(refuse, host, port)))

    def silent(self) -> int:
        """Accepts connections and never says a word."""

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()
            writer.close()

        return self._keep(self.call(asyncio.start_server(hold, "127.0.0.1", 0)))

    def close(self) -> None:
        async def shutdown() -> None:
            for server in self.servers:
                server.close()
            await asyncio.sleep(0.05)  # let connections the clients closed finish closing here too

        self.call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
