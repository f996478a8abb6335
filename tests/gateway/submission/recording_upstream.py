"""An upstream MTA for the proxy's fault tests that records every command it is sent.

The proxy's next hop, observed from the inside: a test can assert not only that no message arrived
but that no DATA was even started for a refused or cut-off transaction. It can also play the faults
an MTA has: stopped (`stop`, then `start` on the same port, as after a restart), hanging (accepts
connections and never says a word), and a full disk (`452 4.3.1` at the end of every message, as
Postfix says when its queue file system is full).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from loopback_server import LoopbackServer

Mode = Literal["ok", "hang", "full"]

EHLO_REPLY = b"250-upstream.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250 SIZE 100000000\r\n"


@dataclass
class Message:
    sender: str
    recipients: list[str]
    data: bytes = b""
    recipient_args: list[str] = field(default_factory=list)


class RecordingUpstream(LoopbackServer):
    """SMTP on a loopback port in its own thread; `mode` is read at each new connection."""

    def __init__(self, mode: Mode = "ok") -> None:
        self.mode: Mode = mode
        self.commands: list[str] = []  # every command line of every session, in order
        self.messages: list[Message] = []  # accepted with 250 at the end of data
        self.refused: list[Message] = []  # received whole, then refused (mode "full")
        self.connections = 0
        self.data_delay = 0.0  # seconds before the answer to a whole message (a slow queue)
        super().__init__()
        self.listen()

    def start(self) -> None:
        self.listen()

    def stop(self) -> None:
        """Stop listening and drop every connection, as a stopped MTA does."""
        self.drop()

    def verbs(self) -> list[str]:
        return [c.split(" ", 1)[0].split(":", 1)[0].upper() for c in self.commands]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.add(writer)
        try:
            if self.mode == "hang":
                await reader.read()  # until the client gives up
                return
            await self._dialogue(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _dialogue(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 upstream.test ESMTP\r\n")
        current: Message | None = None
        while line := await reader.readline():
            command = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            self.commands.append(command)
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                writer.write(EHLO_REPLY)
            elif verb == "MAIL":
                current = Message(command[10:].split(">", 1)[0].lstrip("<"), [])
                writer.write(b"250 2.1.0 OK\r\n")
            elif verb == "RCPT" and current is not None:
                address, _, args = command[8:].partition(">")
                current.recipients.append(address.lstrip("<"))
                current.recipient_args.append(args.strip())
                writer.write(b"250 2.1.5 OK\r\n")
            elif verb == "DATA" and current is not None and current.recipients:
                writer.write(b"354 go ahead\r\n")
                while (part := await reader.readline()) not in (b".\r\n", b""):
                    current.data += part
                if not part:
                    return  # the client went away before its final dot: no message
                await asyncio.sleep(self.data_delay)
                if self.mode == "full":
                    self.refused.append(current)
                    writer.write(b"452 4.3.1 Insufficient system storage\r\n")
                else:
                    self.messages.append(current)
                    writer.write(b"250 2.0.0 Ok: queued\r\n")
                current = None
            elif verb == "RSET":
                current = None
                writer.write(b"250 2.0.0 OK\r\n")
            elif verb == "NOOP":
                writer.write(b"250 2.0.0 OK\r\n")
            elif verb == "QUIT":
                writer.write(b"221 2.0.0 Bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"503 5.5.1 Bad sequence of commands\r\n")
            await writer.drain()
