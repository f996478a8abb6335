"""A small time-to-live cache for call-forward results, in bounded memory.

The caller chooses the lifetime of each entry (positive and negative results live for different
times; temporary ones are never stored). The clock is passed in, so tests need no sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TtlCache(Generic[V]):
    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, tuple[float, V]] = {}

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self.clock() >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: str, value: V, ttl: float) -> None:
        """Keep `value` for `ttl` seconds; a ttl of 0 or less stores nothing."""
        if ttl <= 0:
            return
        now = self.clock()
        self._entries.pop(key, None)
        self._entries[key] = (now + ttl, value)
        if len(self._entries) > self.max_entries:
            for stale in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[stale]
            while len(self._entries) > self.max_entries:  # still full: the oldest entry goes
                del self._entries[next(iter(self._entries))]

    def __len__(self) -> int:
        return len(self._entries)
