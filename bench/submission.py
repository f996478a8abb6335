"""The submission proxy against the sinks (issue 7): messages/s and server CPU per message.

Three servers take the same 10 KB messages from the same client (bench/smtp_load.py):

1. Postfix's smtp-sink directly: the ceiling, what the client and loopback manage;
2. a plain aiosmtpd sink (bench/sink.py): aiosmtpd's engine, a 250 for every message, no AUTH;
3. our submission proxy, in `antiforgery serve` as deployed (bench/servers.py), relaying each
   message before-queue to that smtp-sink: AUTH PLAIN checked against the Argon2id hash in the
   store, the sender checked against the login, the envelope sender signed, a Received header,
   one upstream connection per message. Goal: >= 0.6x the aiosmtpd sink's messages/s.

Postfix's smtp-source cannot AUTH, and the proxy relays nothing unauthenticated, so smtp-source
drives only the two sinks, as a check that the Python client is not what limits them.

Nine in ten sessions log in as a user in full mode (every message signed), one in ten as a user
who has not opted in (passed on unsigned). What reached smtp-sink is read back from its dump file:
every accepted message must be there, with a valid signed sender for opted-in users and the
plain one for the others, or the run fails.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from signed_sender import Policy, verify

from . import procstat, report, servers
from .measure import Result, measure
from .servers import Server
from .smtp_load import LoadRun, Sender, log_in, send
from .store import BenchStore, address, login, mode, set_password

SIZE = 10_240  # body octets per message
RECIPIENT = "friend@site1.example.net"
PASSWORD = "bench submission password"
#: Sessions that send many messages: the proxy closes a session after max_commands (1000) commands.
PER_SESSION = 100
CONCURRENCY = (1, 10)
#: The one-message-per-session rows (a mail client sending one message): fewer, each logs in.
SINGLE = 200
#: Sessions that only log in, two at a time: what one AUTH costs (Argon2id runs in a worker thread).
LOGINS = 30


def bench_users(users: int) -> tuple[list[int], int]:
    """Nine users in full mode and one who has not opted in (store.mode: every 20th is off)."""
    full = [i for i in range(2, users) if mode(i) == "full"][:9]
    off = next(i for i in range(users) if mode(i) == "off")
    return full, off


@dataclass
class Row:
    result: Result
    server: str
    client: str
    concurrency: int
    per_session: int
    run: LoadRun | None = None
    checks: list[str] = field(default_factory=list)


@dataclass
class Verdict:
    rows: list[Row]
    lines: list[str]
    failed: bool


def _dump_size(sink: Server) -> int:
    path = sink.workdir / "dump" / "messages"
    return path.stat().st_size if path.exists() else 0


def _dumped_senders(sink: Server, offset: int) -> list[str]:
    """The MAIL FROM addresses smtp-sink wrote to its dump since `offset`."""
    time.sleep(0.2)  # smtp-sink writes as it answers; let it finish the last one
    with (sink.workdir / "dump" / "messages").open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    return [m.decode(errors="replace") for m in re.findall(rb"^X-Mail-Args: <([^>]*)>", data, re.MULTILINE)]


def _check_delivered(
    senders: list[str], accepted: int, store: BenchStore, plain: set[str], signed_for: set[str]
) -> tuple[str, bool]:
    """Did smtp-sink get every accepted message, signed where it must be? (report line, ok)"""
    keyring, now, policy = store.keyring(), time.time(), Policy()
    kinds: Counter[str] = Counter()
    for sender in senders:
        if sender in plain:
            kinds["unsigned (not opted in)"] += 1
            continue
        found = verify(sender, keyring, now, policy)
        kinds["signed" if found.ok and found.address in signed_for else f"wrong: {sender}"] += 1
    wrong = sum(n for kind, n in kinds.items() if kind.startswith("wrong"))
    ok = len(senders) == accepted and wrong == 0 and kinds["signed"] > 0
    parts = ", ".join(f"{kind} {n}" for kind, n in kinds.most_common(4))
    return f"smtp-sink received {len(senders)} of {accepted} accepted: {parts}", ok


def _python_row(
    name: str,
    server: Server,
    port: int,
    senders: list[Sender],
    *,
    auth: bool,
    concurrency: int,
    per_session: int,
    total: int,
    seconds: float,
    dump: Server | None = None,
) -> tuple[Row, list[str]]:
    """The row, and what `dump` (an smtp-sink on the way) received during the measured run."""
    runs: list[LoadRun] = []
    offset = [0]

    def go(count: int, measured: bool) -> LoadRun:
        if measured and dump is not None:
            offset[0] = _dump_size(dump)
        run = send(
            port,
            senders,
            RECIPIENT,
            total=count,
            concurrency=concurrency,
            per_session=per_session,
            size=SIZE,
            auth=auth,
            seconds=seconds,
        )
        runs.append(run)
        return run

    warm = max(concurrency * min(per_session, 20), min(200, total))
    result = measure(name, server.pid, lambda: go(warm, False), lambda: go(total, True))
    received = _dumped_senders(dump, offset[0]) if dump is not None else []
    return Row(result, server.name, "python", concurrency, per_session, runs[-1]), received


def _source_row(
    name: str, server: Server, port: int, sender: str, concurrency: int, total: int, seconds: float, dump: Server | None
) -> tuple[Row, list[str]]:
    """smtp-source -d: `concurrency` sessions that share `total` messages; it stops at the first
    reply it did not expect, so exit status 0 means every message was accepted."""
    binary = servers.smtp_source()

    def command(count: int) -> list[str]:
        return [
            binary, "-d", "-s", str(concurrency), "-m", str(count), "-l", str(SIZE),
            "-f", sender, "-t", RECIPIENT, "-M", "client.bench.example.net", f"127.0.0.1:{port}",
        ]  # fmt: skip

    warm = subprocess.run(command(min(200, total)), capture_output=True, timeout=seconds)
    if warm.returncode:
        raise RuntimeError(f"{name}: smtp-source failed while warming up: {warm.stderr.decode()[-500:]}")
    time.sleep(0.2)
    offset = _dump_size(dump) if dump is not None else 0
    before = procstat.cpu_seconds(server.pid)
    started = time.perf_counter()
    done = subprocess.run(command(total), capture_output=True, timeout=seconds)
    elapsed = time.perf_counter() - started
    after = procstat.cpu_seconds(server.pid)
    errors = 0 if done.returncode == 0 else 1
    replies = {"250": total} if not errors else {"smtp-source exit": done.returncode}
    nan = float("nan")
    result = Result(name, total if not errors else 0, elapsed, after - before, nan, nan, errors, replies)
    row = Row(result, server.name, "smtp-source", concurrency, total)
    if errors:
        row.checks.append(f"smtp-source: {done.stderr.decode(errors='replace').strip()[-300:]}")
    return row, _dumped_senders(dump, offset) if dump is not None else []


def _ms(value: float) -> str:
    return "-" if value != value else f"{value:.2f}"  # NaN: smtp-source does not time messages


def _shape(row: Row) -> str:
    return f"{row.concurrency} x {row.per_session}" if row.client == "python" else f"{row.concurrency}, -d"


def _cells(row: Row) -> list[str]:
    r = row.result
    shape = _shape(row)
    replies = ", ".join(f"{word} {count}" for word, count in list(r.replies.items())[:3])
    return [
        r.name,
        row.client,
        shape,
        f"{r.requests}",
        f"{r.rate:,.0f}",
        f"{r.cpu_us:,.0f}",
        _ms(r.p50_ms),
        _ms(r.p99_ms),
        f"{r.errors}",
        replies,
    ]


def measure_all(
    store: BenchStore,
    proxy: Server,
    sink: Server,
    total: int,
    seconds: float,
    say: Callable[[str], None],
) -> Verdict:
    """Every row, then the checks and the report lines. `sink` is the proxy's upstream."""
    full, off = bench_users(store.users)
    senders = [Sender(address(i), login(i), PASSWORD) for i in [*full, off]]
    plain, signed_for = {address(off)}, {address(i) for i in full}
    rows: list[Row] = []

    def check(row: Row, received: list[str], signing: bool) -> None:
        if signing:
            line, ok = _check_delivered(received, row.result.requests, store, plain, signed_for)
        else:
            line = f"smtp-sink received {len(received)} of {row.result.requests} accepted"
            ok = len(received) == row.result.requests
        row.checks.append(line if ok else f"FAILED: {line}")

    with servers.aiosmtpd_sink() as plain_sink:
        targets = (
            ("smtp-sink", sink, sink.ports["smtp"], False),
            ("aiosmtpd sink", plain_sink, plain_sink.ports["smtp"], False),
            ("submission proxy -> smtp-sink", proxy, proxy.ports["submission"], True),
        )
        for concurrency in CONCURRENCY:
            for name, server, port, auth in targets:
                say(f"submission: {name}, {concurrency} session(s) of {PER_SESSION} messages")
                dump = sink if server is not plain_sink else None
                row, received = _python_row(
                    name,
                    server,
                    port,
                    senders,
                    auth=auth,
                    concurrency=concurrency,
                    per_session=PER_SESSION,
                    total=total,
                    seconds=seconds,
                    dump=dump,
                )
                if dump is not None:
                    check(row, received, signing=auth)
                rows.append(row)
        for name, server, port, _ in targets[:2]:
            say(f"submission: smtp-source -> {name}")
            dump = sink if server is sink else None
            row, received = _source_row(name, server, port, address(full[0]), 10, total, seconds, dump)
            if dump is not None:
                check(row, received, signing=False)
            rows.append(row)
        for name, server, port, auth in targets[1:]:
            say(f"submission: {name}, one message per session")
            dump = sink if auth else None
            row, received = _python_row(
                name,
                server,
                port,
                senders,
                auth=auth,
                concurrency=10,
                per_session=1,
                total=SINGLE,
                seconds=seconds,
                dump=dump,
            )
            if dump is not None:
                check(row, received, signing=True)
            rows.append(row)
    say("submission: logins only (EHLO, AUTH, QUIT)")
    logins = measure(
        "submission proxy, login only",
        proxy.pid,
        lambda: log_in(proxy.ports["submission"], senders, sessions=4, concurrency=2, seconds=seconds),
        lambda: log_in(proxy.ports["submission"], senders, sessions=LOGINS, concurrency=2, seconds=seconds),
    )
    return _verdict(rows, logins)


def _verdict(rows: list[Row], logins: Result) -> Verdict:
    def find(server: str, concurrency: int, per_session: int) -> Result:
        return next(
            r.result
            for r in rows
            if r.result.name.startswith(server)
            and r.client == "python"
            and r.concurrency == concurrency
            and r.per_session == per_session
        )

    lines = [
        report.table(
            [
                "server",
                "client",
                "sessions x msgs",
                "messages",
                "msgs/s",
                "server CPU us/msg",
                "p50 ms",
                "p99 ms",
                "errors",
                "replies",
            ],
            [_cells(r) for r in rows],
        ),
        "",
    ]
    login_us = logins.cpu_us
    for concurrency in CONCURRENCY:
        proxy, sink = find("submission", concurrency, PER_SESSION), find("aiosmtpd", concurrency, PER_SESSION)
        ratio = proxy.rate / sink.rate
        relay_us = proxy.cpu_us - login_us / PER_SESSION
        lines.append(
            f"- Submission proxy / aiosmtpd sink, messages/s at {concurrency} session(s) of {PER_SESSION}:"
            f" {ratio:.2f}x (goal >= 0.6x: {'met' if ratio >= 0.6 else 'NOT met'});"
            f" CPU per message {proxy.cpu_us / sink.cpu_us:.1f}x ({proxy.cpu_us:,.0f} us: about"
            f" {login_us / PER_SESSION:,.0f} us its share of the session's login, {relay_us:,.0f} us relaying);"
            f" smtp-sink directly {find('smtp-sink', concurrency, PER_SESSION).rate:,.0f}/s."
        )
    proxy, sink = find("submission", 10, 1), find("aiosmtpd", 10, 1)
    lines.append(
        f"- One message per session (each logs in first, as most mail clients send): proxy {proxy.rate:,.0f}/s,"
        f" {proxy.cpu_us / 1000:.0f} ms CPU per message, {proxy.rate / sink.rate:.2f}x the aiosmtpd sink."
    )
    lines.append(
        f"- A login (EHLO, AUTH PLAIN checked against an Argon2id hash, QUIT; {logins.requests} sessions, two at"
        f" a time) costs the proxy {login_us / 1000:,.1f} ms of CPU; {logins.rate:.1f} logins/s."
    )
    failed = logins.errors > 0 or logins.requests == 0
    if failed:
        lines.append(f"- login only: ERRORS {logins.errors}, replies {logins.replies}")
    for row in rows:
        for check in row.checks:
            lines.append(f"- {row.result.name} ({row.client}, {_shape(row)}): {check}")
            failed = failed or not check.startswith("smtp-sink received")
        if row.run is not None and row.run.failures:
            failed = True
            shown = "; ".join(f"{text} ({n})" for text, n in row.run.failures.most_common(5))
            lines.append(f"- {row.result.name} ({row.client}, {_shape(row)}): ERRORS {shown}")
        failed = failed or row.result.errors > 0 or row.result.requests == 0
    return Verdict(rows, lines, failed)


def prepare(store: BenchStore) -> None:
    """Passwords for the benchmark's senders, written before the service starts."""
    full, off = bench_users(store.users)
    set_password(store, [*full, off], PASSWORD)
