"""`bench/soak`: a million policy requests over ten connections, with zero errors and flat memory.

The service runs as `antiforgery serve` on the benchmark store. Its resident memory is sampled
about every 10,000 requests; after the warm-up (the first tenth) it may grow by at most
`--rss-slack-mib`, else the soak fails, as it does on any client error, any reply that is not a
policy action, or a traceback in the service's log. Bounded in count and in time (`--seconds`):
a soak that runs out of time fails too. Loopback only. The result is appended to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from . import report, servers, workload
from .client import POLICY, Connection, drive
from .procstat import cpu_seconds, rss_bytes
from .store import bench_store, clear_events

MiB = 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/soak", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=1800.0, help="time bound (default 30 min)")
    parser.add_argument("--rss-slack-mib", type=float, default=32.0, help="allowed growth after warm-up")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--blacklisted", type=int, default=10_000_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    def say(text: str) -> None:
        print(text, flush=True)

    machine = report.machine()
    say(f"machine: {machine}")
    store = bench_store(args.users, args.blacklisted, say)
    clear_events(store)  # each soak records a few hundred thousand refusals; start from none
    load = workload.build(store)
    requests = [POLICY.encode(text) for text in load.policy]
    samples: list[tuple[int, int]] = []  # (requests answered so far, RSS bytes)
    lock = threading.Lock()

    with servers.antiforgery(store) as ours:
        say(f"antiforgery ready in {ours.ready_seconds:.1f} s, RSS {rss_bytes(ours.pid) / MiB:.0f} MiB")
        connections = [Connection(ours.ports["policy"], POLICY) for _ in range(args.connections)]

        def sample(done_by_first: int) -> None:
            with lock:
                samples.append((done_by_first * args.connections, rss_bytes(ours.pid)))
            if len(samples) % 10 == 0:
                say(f"  ~{samples[-1][0]:,} requests, RSS {samples[-1][1] / MiB:.1f} MiB")

        cpu_before = cpu_seconds(ours.pid)
        run = drive(
            connections, requests, args.requests, deadline=time.monotonic() + args.seconds, between=sample
        )
        cpu = cpu_seconds(ours.pid) - cpu_before
        rss_end = rss_bytes(ours.pid)
        for connection in connections:
            connection.close()
        time.sleep(0.5)
        tracebacks = ours.log().count("Traceback")

    warm = [rss for done, rss in samples if done <= args.requests // 10]
    after = [rss for done, rss in samples if done > args.requests // 10]
    baseline = warm[-1] if warm else (samples[0][1] if samples else rss_end)
    peak = max([*after, rss_end])
    growth = (peak - baseline) / MiB
    bad_replies = sum(count for word, count in run.replies.items() if word not in ("DUNNO", "550", "PREPEND"))
    problems = []
    if run.count < args.requests:
        problems.append(f"only {run.count:,} of {args.requests:,} requests answered within {args.seconds:.0f} s")
    if run.errors:
        problems.append(f"{run.errors} connection errors")
    if bad_replies:
        problems.append(f"{bad_replies} replies that are not policy actions")
    if tracebacks:
        problems.append(f"{tracebacks} tracebacks in the service log")
    if growth > args.rss_slack_mib:
        problems.append(f"RSS grew {growth:.1f} MiB after warm-up (bound {args.rss_slack_mib:.0f} MiB)")
    verdict = "passed" if not problems else "FAILED: " + "; ".join(problems)
    body = "\n".join(
        [
            f"Machine: {machine}.",
            f"Store: {store.users:,} users, {store.blacklisted:,} blacklisted tags; same policy mix as bench/run.",
            f"{run.count:,} policy requests over {args.connections} connections in {run.seconds:.0f} s"
            f" ({run.rate:,.0f}/s), server CPU {cpu / max(run.count, 1) * 1e6:.0f} us/request,"
            f" p50 {run.percentile(50):.3f} ms, p99 {run.percentile(99):.3f} ms, max {run.percentile(100):.3f} ms.",
            f"Replies: {', '.join(f'{w} {c:,}' for w, c in run.replies.most_common())}; client errors {run.errors};"
            f" tracebacks in the service log {tracebacks}.",
            f"RSS: {baseline / MiB:.1f} MiB after warm-up (first {args.requests // 10:,} requests), peak after it"
            f" {peak / MiB:.1f} MiB, {rss_end / MiB:.1f} MiB at the end: growth {growth:.1f} MiB"
            f" (bound {args.rss_slack_mib:.0f} MiB); {len(samples)} samples.",
            f"Result: {verdict}.",
        ]
    )
    say("\n" + body)
    if not args.no_write:
        say(f"\nappended to {report.append('bench/soak', body)}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
