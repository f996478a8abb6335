"""The load client of the submission benchmark: many SMTP sessions, each sending several messages.

Postfix's smtp-source cannot log in (it has no AUTH option) and the proxy relays nothing without
AUTH (design invariant 7; no setting turns that off), so this client is used against every server
of the comparison, sinks included, and only the server differs. It speaks as a mail client does,
without pipelining (as smtp-source): greeting, EHLO, `AUTH PLAIN` with an initial response when
given credentials (the proxy allows that without TLS on loopback when configured to), then for
each message MAIL, RCPT, DATA and the message, each waiting for its reply, and QUIT.

Every reply is checked: a message counts only if the server said 2xx to its final dot. Any other
reply is an error, kept verbatim (first line) so that the report can print it; after a refused
step the client sends RSET and goes on, after a lost connection it opens the next session.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from dataclasses import dataclass, field

from .client import Run

BODY_LINE = b"The quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\r\n"


@dataclass(frozen=True)
class Sender:
    address: str
    login: str = ""
    password: str = ""


@dataclass
class LoadRun(Run):
    """A `Run` whose latencies are per message (MAIL to the reply to the final dot)."""

    failures: Counter[str] = field(default_factory=Counter)  # "STEP: reply" -> count
    sessions: int = 0


def message(sender: str, recipient: str, size: int) -> bytes:
    """A plain-text message with `size` octets of body (10 KB in the benchmark), ready for DATA."""
    lines = size // len(BODY_LINE) + 1
    body = (BODY_LINE * lines)[:size]
    body = body[: body.rfind(b"\r\n") + 2]  # whole lines only
    head = (
        f"From: <{sender}>\r\nTo: <{recipient}>\r\nSubject: benchmark\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench.{sender}>\r\n\r\n"
    ).encode()
    return head + body


class ReplyError(Exception):
    def __init__(self, step: str, reply: bytes) -> None:
        super().__init__(f"{step}: {reply.decode(errors='replace').splitlines()[-1] if reply else '(closed)'}")


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One whole reply (RFC 5321 section 4.2.1: the last line has a space after the code)."""
    lines = []
    while True:
        line = await reader.readuntil(b"\n")
        lines.append(line)
        if line[3:4] != b"-":
            return b"".join(lines)


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, step: str, want: bytes) -> None:
    writer.write(data)
    reply = await _reply(reader)
    if not reply.startswith(want):
        raise ReplyError(step, reply)


@dataclass
class _Plan:
    port: int
    senders: list[Sender]
    recipient: str
    total: int
    per_session: int
    auth: bool
    deadline: float
    messages: dict[str, bytes]
    next_session: int = 0
    sent: int = 0  # messages handed out to sessions

    def take(self) -> tuple[int, int] | None:
        """(session number, messages to send in it), or None when all are handed out or time is up.

        With `per_session` 0, `total` sessions that log in and send nothing."""
        if self.sent >= self.total or time.monotonic() > self.deadline:
            return None
        count = min(self.per_session, self.total - self.sent)
        self.sent += count or 1
        self.next_session += 1
        return self.next_session - 1, count


async def _session(plan: _Plan, number: int, count: int, run: LoadRun) -> None:
    sender = plan.senders[number % len(plan.senders)]
    data = plan.messages[sender.address]
    reader, writer = await asyncio.open_connection("127.0.0.1", plan.port)
    done = 0
    try:
        greeting = await _reply(reader)
        if not greeting.startswith(b"220"):
            raise ReplyError("greeting", greeting)
        begin = time.perf_counter_ns()
        await _ask(reader, writer, b"EHLO client.bench.example.net\r\n", "EHLO", b"250")
        if plan.auth:
            token = base64.b64encode(f"\0{sender.login}\0{sender.password}".encode()).decode()
            await _ask(reader, writer, f"AUTH PLAIN {token}\r\n".encode(), "AUTH", b"235")
        mail = f"MAIL FROM:<{sender.address}>\r\n".encode()
        rcpt = f"RCPT TO:<{plan.recipient}>\r\n".encode()
        for _ in range(count):
            begin = time.perf_counter_ns()
            try:
                await _ask(reader, writer, mail, "MAIL", b"250")
                await _ask(reader, writer, rcpt, "RCPT", b"250")
                await _ask(reader, writer, b"DATA\r\n", "DATA", b"354")
                writer.write(data)
                reply = await _reply(reader)
            except ReplyError as exc:
                run.errors += 1
                run.failures[str(exc)] += 1
                done += 1
                await _ask(reader, writer, b"RSET\r\n", "RSET", b"250")
                continue
            done += 1
            run.replies[reply[:3].decode(errors="replace")] += 1
            if reply.startswith(b"2"):
                run.latencies.append(time.perf_counter_ns() - begin)
            else:
                run.errors += 1
                run.failures[str(ReplyError("end of data", reply))] += 1
            if time.monotonic() > plan.deadline:
                break
        await _ask(reader, writer, b"QUIT\r\n", "QUIT", b"221")
        if not count:
            run.latencies.append(time.perf_counter_ns() - begin)  # a login-only session, EHLO to QUIT
    except (ReplyError, OSError, asyncio.IncompleteReadError) as exc:
        lost = count - done  # a session that broke loses the messages it had not sent
        run.errors += max(lost, 1)
        run.failures[str(exc) if isinstance(exc, ReplyError) else f"connection: {type(exc).__name__}"] += max(lost, 1)
    finally:
        run.sessions += 1
        writer.close()


async def _worker(plan: _Plan, run: LoadRun) -> None:
    while (job := plan.take()) is not None:
        await _session(plan, *job, run)


async def _load(plan: _Plan, concurrency: int) -> LoadRun:
    run = LoadRun(replies=Counter())
    started = time.perf_counter()
    await asyncio.gather(*(_worker(plan, run) for _ in range(concurrency)))
    run.seconds = time.perf_counter() - started
    return run


def log_in(port: int, senders: list[Sender], *, sessions: int, concurrency: int, seconds: float) -> LoadRun:
    """`sessions` sessions that log in (EHLO, AUTH PLAIN) and QUIT: what a login costs the server.
    Latencies are per session."""
    plan = _Plan(port, senders, "", sessions, 0, True, time.monotonic() + seconds, {s.address: b"" for s in senders})
    return asyncio.run(_load(plan, concurrency))


def send(
    port: int,
    senders: list[Sender],
    recipient: str,
    *,
    total: int,
    concurrency: int,
    per_session: int,
    size: int,
    auth: bool,
    seconds: float,
) -> LoadRun:
    """Send `total` messages of `size` body octets over `concurrency` parallel sessions, each at most
    `per_session` long; session k sends as senders[k % len(senders)]. Bounded by `seconds`."""
    messages = {s.address: message(s.address, recipient, size) + b".\r\n" for s in senders}
    plan = _Plan(port, senders, recipient, total, per_session, auth, time.monotonic() + seconds, messages)
    return asyncio.run(_load(plan, concurrency))
