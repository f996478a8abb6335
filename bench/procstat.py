"""CPU time and memory of a server process, read from /proc, so every server is measured alike.

CPU is counted for the whole process tree (the process and its live descendants): postsrsd 1.x
forks a child per connection, postgrey and our service do not. Readings are taken while the
benchmark's connections are still open, so a forked child's time is counted before it exits.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return text[text.rindex(")") + 2 :].split()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def tree(pid: int) -> list[int]:
    """The process and all its descendants alive now."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            todo.extend(_children(current))
        except OSError:
            continue
    return pids


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of the process tree (utime and stime, fields 14 and 15 of stat(5))."""
    total = 0
    for member in tree(pid):
        try:
            fields = _stat_fields(member)
        except OSError:
            continue  # exited between listing and reading
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of the process tree (resident pages from statm)."""
    total = 0
    for member in tree(pid):
        try:
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total
