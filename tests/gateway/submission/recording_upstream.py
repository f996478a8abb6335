"""An upstream MTA for the proxy's fault tests that records every command it is sent.

The proxy's next hop, observed from the inside: a test can assert not only that no message arrived
but that no DATA was even started for a refused or cut-off transaction. It can also play the faults
an MTA has: stopped (`stop`, then `start` on the same port, as after a restart), hanging (accepts
connections and never says a word), and a full disk (`452 4.3.1` at the end of every message, as
Postfix says when its queue file system is full). For the proxy's reuse of connections it keeps
each connection's commands apart (`sessions`), counts the connections it closed, can end the
connections it has while it goes on listening (`hang_up`: an idle timeout, a killed process), can
make them answer their next command with 421 or never again (`retire`: a server shutting down, a
hung process), and can answer
MAIL or the end of data with a reply of the test's choosing.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from loopback_server import LoopbackServer

Mode = Literal["ok", "hang", "full"]
HangUp = Literal["421", "close", "reset"]

EHLO_REPLY = b"250-upstream.test\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-DSN\r\n250 SIZE 100000000\r\n"
EHLO_PIPELINING = EHLO_REPLY.replace(b"\r\n", b"\r\n250-PIPELINING\r\n", 1)


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
        self.refused: list[Message] = []  # received whole, then refused (mode "full", data_replies)
        self.abandoned: list[Message] = []  # the client closed the connection in DATA, before its final dot
        self.connections = 0
        self.closed = 0  # connections ended, by either side
        self.sessions: list[list[str]] = []  # the commands of each connection, in the order they were opened
        self.data_delay = 0.0  # seconds before the answer to a whole message (a slow queue)
        self.mail_reply: bytes | None = None  # instead of 250 to MAIL
        self.data_replies: dict[str, bytes] = {}  # sender prefix -> reply to its end of data, instead of 250
        self.retired = 0  # connections up to this number answer `retired_reply` from now on (see retire)
        self.retired_reply: bytes | None = None
        self.pipelining = True  # offered in EHLO, as Postfix does
        #: Commands read while the next one had already arrived (sent in one write with it).
        self.pipelined: list[str] = []
        super().__init__()
        self.listen()

    def start(self) -> None:
        self.listen()

    def stop(self) -> None:
        """Stop listening and drop every connection, as a stopped MTA does."""
        self.drop()

    def verbs(self, session: int | None = None) -> list[str]:
        """The verbs of every command, or of one connection's (numbered from 0)."""
        commands = self.commands if session is None else self.sessions[session]
        return [c.split(" ", 1)[0].split(":", 1)[0].upper() for c in commands]

    def hang_up(self, how: HangUp = "421") -> None:
        """End every connection and go on listening: "421" as Postfix's smtpd at its idle timeout
        (the 421, then close), "close" without a word, "reset" as a killed process (TCP RST)."""

        async def hang_up() -> None:
            for writer in list(self.writers):
                if how == "421":
                    writer.write(b"421 4.4.2 upstream.test Error: timeout exceeded\r\n")
                if how == "reset":  # no lingering: the kernel sends RST, not FIN
                    linger = struct.pack("ii", 1, 0)
                    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    writer.transport.abort()
                else:
                    writer.close()

        self.call(hang_up())

    def retire(self, reply: bytes | None = b"421 4.3.2 upstream.test Service shutting down\r\n") -> None:
        """The connections open now answer their next command with `reply` and close (a server shutting
        down says 421), or with None never answer again (a hung process); new connections are served."""
        self.retired, self.retired_reply = self.connections, reply

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        """Wait for `condition` (of what this upstream saw) with a deadline."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"not within {timeout}s: {what}; sessions: {self.sessions}"
            time.sleep(0.01)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.sessions.append([])
        self.writers.add(writer)
        try:
            if self.mode == "hang":
                await reader.read()  # until the client gives up
                return
            await self._dialogue(reader, writer, number)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()
            self.closed += 1

    async def _dialogue(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        writer.write(b"220 upstream.test ESMTP\r\n")
        current: Message | None = None
        while line := await reader.readline():
            command = line.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            self.commands.append(command)
            self.sessions[number - 1].append(command)
            if getattr(reader, "_buffer", b""):  # the next command came with this one (StreamReader's own buffer)
                self.pipelined.append(command)
            verb = command[:4].upper()
            if number <= self.retired:
                if self.retired_reply is None:
                    continue  # read, never answered
                writer.write(self.retired_reply)
                await writer.drain()
                return
            if verb in ("EHLO", "HELO"):
                writer.write(EHLO_PIPELINING if self.pipelining and verb == "EHLO" else EHLO_REPLY)
            elif verb == "MAIL" and self.mail_reply is not None:
                writer.write(self.mail_reply)
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
                    self.abandoned.append(current)
                    return  # the client went away before its final dot: no message
                await asyncio.sleep(self.data_delay)
                reply = next((r for p, r in self.data_replies.items() if current.sender.startswith(p)), None)
                if self.mode == "full":
                    reply = b"452 4.3.1 Insufficient system storage\r\n"
                if reply is not None:
                    self.refused.append(current)
                    writer.write(reply)
                    if reply.startswith(b"421"):
                        await writer.drain()
                        return
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
