"""`bench/run` (python -m bench): our verification service against the daemons it replaces or joins.

1. Signing: our Postfix socketmap `sign` map against postsrsd, the usual sender-rewriting table.
   Debian 12's postsrsd (1.10) speaks Postfix tcp_table, not socketmap, so each server is asked in
   its own protocol, by the same client loop (bench/client.py). Goal: CPU per request <= 1.0x.
2. Policy checks on a store of 1,000,000 users and 10,000,000 blacklisted tags, against postgrey
   on the same policy requests. Goals: CPU per request <= 0.1x postgrey's; p99 < 1 ms at one
   connection.
3. The SMTP callout responder: callouts per second and p99 (MAIL FROM:<>, RCPT TO, RSET).
4. The floor: an echo server that decides nothing, on asyncio streams, on our adapters' Protocol
   (bench/echo.py) and in C (bench/echo.c).
5. The submission proxy relaying 10 KB messages to Postfix's smtp-sink, against smtp-sink
   directly and a plain aiosmtpd sink (bench/submission.py). Goal: >= 0.6x the aiosmtpd sink's
   messages/s.

`--only PART` (repeatable) runs some of them, e.g. `bench/run --only submission`; the store is
loaded either way, since the proxy serves from the same snapshot. Prints the results and appends
them to docs/benchmarks.md. Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable

from gateway import eventloop

from . import report, servers, smtp_client, submission, workload
from .client import POLICY, SOCKETMAP_SIGN, TCP_TABLE, Connection, Protocol, Run, drive
from .measure import Result, measure
from .procstat import rss_bytes
from .store import bench_store, clear_events

MiB = 2**20


def _loop(port: int, protocol: Protocol, keys: list[str], total: int, seconds: float) -> tuple[Callable[[], Run], ...]:
    """Warm-up and measured run over one connection, both through `drive`."""
    connection = Connection(port, protocol)
    requests = [protocol.encode(key) for key in keys]

    def warm_up() -> Run:
        return drive([connection], requests, min(2000, total))

    def run() -> Run:
        return drive([connection], requests, total, deadline=time.monotonic() + seconds)

    return warm_up, run


def _callout_loop(port: int, recipients: list[str], total: int, seconds: float) -> tuple[Callable[[], Run], ...]:
    connection = smtp_client.open_session(port)

    def warm_up() -> Run:
        return smtp_client.callouts(connection, recipients, min(1000, total))

    def run() -> Run:
        return smtp_client.callouts(connection, recipients, total, deadline=time.monotonic() + seconds)

    return warm_up, run


def _row(result: Result) -> list[str]:
    replies = ", ".join(f"{word} {count}" for word, count in list(result.replies.items())[:4])
    return [
        result.name,
        f"{result.requests}",
        f"{result.rate:,.0f}",
        f"{result.cpu_us:.1f}",
        f"{result.p50_ms:.3f}",
        f"{result.p99_ms:.3f}",
        f"{result.errors}",
        replies,
    ]


def _verdict(ratio: float, goal: float) -> str:
    return f"{ratio:.3f}x (goal <= {goal}x: {'met' if ratio <= goal else 'NOT met'})"


SECTIONS = ("sign", "policy", "callout", "floor", "submission")
#: The echo floors (bench/echo.py): result key, server kind, event loop, row name.
FLOORS = (
    ("floor_streams", "streams", "asyncio", "asyncio streams"),
    ("floor_protocol", "protocol", "asyncio", "callout.exchange on asyncio"),
    ("floor_uvloop", "protocol", "uvloop", "callout.exchange on uvloop"),
    ("floor_c", "c", "", "in C, a process per connection as postsrsd"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--blacklisted", type=int, default=10_000_000)
    parser.add_argument("--requests", type=int, default=30_000, help="per measurement (default 30000)")
    parser.add_argument("--messages", type=int, default=3_000, help="per submission measurement (default 3000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound per measurement")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this part (repeatable; default: all)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to docs/benchmarks.md")
    parser.add_argument(
        "--event-loop", choices=eventloop.LOOPS, default=eventloop.DEFAULT, help="the loop `antiforgery serve` runs on"
    )
    args = parser.parse_args(argv)
    only = set(args.only or SECTIONS)

    def say(text: str) -> None:
        print(text, flush=True)

    machine = report.machine()
    say(f"machine: {machine}")
    store = bench_store(args.users, args.blacklisted, say)
    say(f"store: {store.path.name}" + (f" (built in {store.build_seconds:.0f} s)" if store.build_seconds else ""))
    clear_events(store)
    load = workload.build(store)
    if "submission" in only:
        submission.prepare(store)
    n, seconds = args.requests, args.seconds
    results: dict[str, Result] = {}
    proxy: submission.Verdict | None = None

    say("starting antiforgery serve (loads the snapshot)")
    with contextlib.ExitStack() as stack:
        # The proxy's next hop; started first, since the proxy's configuration names its port.
        sink = stack.enter_context(servers.smtp_sink()) if "submission" in only else None
        upstream = sink.ports["smtp"] if sink else None
        ours = stack.enter_context(servers.antiforgery(store, submission_upstream=upstream, event_loop=args.event_loop))
        ready, rss = ours.ready_seconds, rss_bytes(ours.pid)
        say(f"antiforgery ready in {ready:.1f} s, RSS {rss / MiB:.0f} MiB")

        if "sign" in only:
            say("sign: antiforgery socketmap")
            results["sign_ours"] = measure(
                "antiforgery socketmap sign",
                ours.pid,
                *_loop(ours.ports["socketmap"], SOCKETMAP_SIGN, load.sign_keys, n, seconds),
            )
            with servers.postsrsd() as srs:
                say("sign: postsrsd tcp_table")
                results["sign_postsrsd"] = measure(
                    "postsrsd tcp_table forward",
                    srs.pid,
                    *_loop(srs.ports["forward"], TCP_TABLE, load.sign_keys, n, seconds),
                )

        if "policy" in only:
            say("policy: antiforgery")
            results["policy_ours"] = measure(
                "antiforgery policy", ours.pid, *_loop(ours.ports["policy"], POLICY, load.policy, n, seconds)
            )
            with servers.postgrey() as grey:
                say("policy: postgrey")
                results["policy_postgrey"] = measure(
                    "postgrey policy", grey.pid, *_loop(grey.ports["policy"], POLICY, load.policy, n, seconds)
                )

        if "callout" in only:
            say("callouts: antiforgery")
            results["callout"] = measure(
                "antiforgery callout responder",
                ours.pid,
                *_callout_loop(ours.ports["callout"], load.callout_recipients, n, seconds),
            )

        if sink is not None:
            proxy = submission.measure_all(store, ours, sink, args.messages, seconds, say)
        rss_end = rss_bytes(ours.pid)

    if "floor" in only:
        for key, kind, loop, name in FLOORS:
            with servers.echo(kind, loop) as floor:
                say(f"floor: {name}")
                results[key] = measure(
                    f"echo, {name} (floor)",
                    floor.pid,
                    *_loop(floor.ports["echo"], SOCKETMAP_SIGN, load.sign_keys, n, seconds),
                )

    lines = [
        f"Machine: {machine}.",
        f"Store: {store.users:,} users, {store.blacklisted:,} blacklisted tags (SQLite); "
        f"`antiforgery serve --event-loop {args.event_loop}` ready (snapshot loaded) in {ready:.1f} s,"
        f" RSS {rss / MiB:.0f} MiB "
        f"after loading, {rss_end / MiB:.0f} MiB at the end.",
    ]
    if results:
        lines += _verification_lines(results)
    if proxy is not None:
        lines += ["", *_submission_lines(proxy)]
    body = "\n".join(lines)
    say("\n" + body)
    if not args.no_write:
        title = "bench/run" + "".join(f" --only {part}" for part in SECTIONS if part in only and args.only)
        say(f"\nappended to {report.append(title, body)}")
    failed = any(r.errors for r in results.values()) or (proxy is not None and proxy.failed)
    return 1 if failed else 0


def _verification_lines(results: dict[str, Result]) -> list[str]:
    lines = [
        "Policy mix: " + ", ".join(f"{kind} {share}%" for share, kind in workload.POLICY_MIX) + ".",
        "One connection per measurement, one request in flight; latency measured by the client.",
        "",
        report.table(
            ["server", "requests", "req/s", "server CPU us/req", "p50 ms", "p99 ms", "errors", "replies"],
            [_row(r) for r in results.values()],
        ),
        "",
    ]
    if "sign_ours" in results and "sign_postsrsd" in results:
        ours, srs = results["sign_ours"], results["sign_postsrsd"]
        lines.append(
            f"- Signing, CPU per request, antiforgery socketmap / postsrsd tcp_table:"
            f" {_verdict(ours.cpu_us / srs.cpu_us, 1.0)}; requests/s {ours.rate / srs.rate:.2f}x. Each server is"
            " asked in its own protocol (Debian 12's postsrsd 1.10 has no socketmap) by the same client loop."
        )
    if "policy_ours" in results and "policy_postgrey" in results:
        ours, grey = results["policy_ours"], results["policy_postgrey"]
        p99 = ours.p99_ms
        lines += [
            f"- Policy, CPU per request, antiforgery / postgrey: {_verdict(ours.cpu_us / grey.cpu_us, 0.1)};"
            f" requests/s {ours.rate / grey.rate:.2f}x.",
            f"- Policy p99 at one connection: {p99:.3f} ms (goal < 1 ms: {'met' if p99 < 1.0 else 'NOT met'}).",
        ]
    if "callout" in results:
        lines.append(
            f"- Callouts: {results['callout'].rate:,.0f}/s, p99 {results['callout'].p99_ms:.3f} ms per callout"
            " (MAIL FROM:<>, RCPT TO, RSET: three round trips)."
        )
    if all(key in results for key, *_ in FLOORS):
        srs_cost = (
            f"; postsrsd's whole request costs {results['sign_postsrsd'].cpu_us:.0f} us"
            if ("sign_postsrsd" in results)
            else ""
        )
        lines.append(
            f"- Floor: a netstring echo that decides nothing costs {results['floor_streams'].cpu_us:.0f} us of CPU"
            f" per request on asyncio streams (as our adapters ran before issue 7),"
            f" {results['floor_protocol'].cpu_us:.0f} us on callout.exchange's Protocol on the standard loop and"
            f" {results['floor_uvloop'].cpu_us:.0f} us on uvloop (as `serve` runs now){srs_cost};"
            f" the same echo in C, served as postsrsd serves (bench/echo.c), {results['floor_c'].cpu_us:.0f} us."
        )
    return lines


def _submission_lines(proxy: submission.Verdict) -> list[str]:
    return [
        f"Submission: {submission.SIZE:,}-octet message bodies, one recipient each, from bench/smtp_load.py"
        " (no pipelining, as smtp-source) to each server; `sessions x msgs` is parallel sessions x messages"
        " per session. The proxy logs each session in (AUTH PLAIN, Argon2id), signs the sender (9 sessions in"
        " 10 are users in full mode, 1 a user who has not opted in) and relays to smtp-sink; its CPU is the"
        " proxy's alone. smtp-source (which cannot AUTH) drives the two sinks as a check on the client."
        " What smtp-sink received is read back from its dump and checked.",
        "",
        *proxy.lines,
    ]


if __name__ == "__main__":
    sys.exit(main())
