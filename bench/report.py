"""The machine a run happened on, and the dated section it appends to docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"

HEADER = """# Benchmarks

Written by `bench/run` (throughput, CPU and latency against postsrsd and postgrey) and `bench/soak`
(a million policy requests, memory watched): each run appends a dated section. They are not tests
and `scripts/test` does not run them. Everything runs on loopback, on the machine named in each
section; CPU per request is the server process tree's user+system time (/proc/PID/stat) over the
measured requests, with the client on the other core. Timings on a busy machine vary: compare the
ratios, which are measured in one run, rather than absolute numbers across sections.

The submission proxy is measured against Postfix's smtp-sink and a plain aiosmtpd sink
(bench/submission.py says how): messages/s and CPU per message.
"""


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs (nproc), {model}, Linux {platform.release()}, "
        f"Python {platform.python_version()}; load average at start {load}"
    )


def append(title: str, body: str, when: dt.datetime | None = None) -> Path:
    when = when or dt.datetime.now(dt.UTC)
    if not DOC.exists():
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(HEADER)
    with DOC.open("a", encoding="utf-8") as handle:
        handle.write(f"\n## {title}, {when:%Y-%m-%d %H:%M} UTC\n\n{body.rstrip()}\n")
    return DOC


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
