"""One measurement: warm up, read the server's CPU, run the loop, read it again.

CPU per request is the server's user+system time over the run divided by the requests answered;
the client's own time is not counted (it runs in this process, on the other core).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import procstat
from .client import Run


@dataclass(frozen=True)
class Result:
    name: str
    requests: int
    seconds: float
    cpu_seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    replies: dict[str, int] = field(default_factory=dict)
    rss_bytes: int = 0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        """Server CPU microseconds per request."""
        return self.cpu_seconds / self.requests * 1e6 if self.requests else float("nan")


def measure(name: str, pid: int, warm_up: Callable[[], Run], run: Callable[[], Run]) -> Result:
    warmed = warm_up()
    if warmed.errors:
        raise RuntimeError(f"{name}: {warmed.errors} errors while warming up")
    time.sleep(0.2)  # let the server finish what the warm-up left (event writes)
    before = procstat.cpu_seconds(pid)
    done = run()
    after = procstat.cpu_seconds(pid)
    return Result(
        name,
        done.count,
        done.seconds,
        after - before,
        done.percentile(50),
        done.percentile(99),
        done.errors,
        dict(done.replies.most_common()),
        procstat.rss_bytes(pid),
    )
