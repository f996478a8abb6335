"""Per-client limits for the public callout responder: token buckets and open-session counts.

A callout answers 550 for an unsigned address of a protected user and 250 otherwise, so without
limits a remote host could use it as an oracle: to learn who has opted in, or to try tags. The
tags are HMACs too long to guess, but every guess still costs us a decision; a token bucket per
client makes the cost of asking grow with the number of questions.

Pure: the caller passes the time (STYLE principle 2), so the tests need no sleep.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.clients import client_key

#: Buckets kept at most; past that, full buckets (which a fresh one would equal) are dropped first.
MAX_CLIENTS = 10_000


@dataclass(slots=True)
class TokenBucket:
    """`burst` tokens at most, refilled at `rate` per second; each request takes one."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    def level(self, now: float) -> float:
        return min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.rate)

    def take(self, now: float) -> bool:
        self.tokens = self.level(now)
        self.stamp = max(self.stamp, now)  # a clock stepping back must not mint tokens later
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class ClientLimits:
    """Requests per client (token bucket) and concurrent sessions per client, in bounded memory."""

    def __init__(self, rate: float, burst: int, max_sessions: int, max_clients: int = MAX_CLIENTS) -> None:
        if rate <= 0 or burst < 1 or max_sessions < 1:
            raise ValueError("rate must be positive, burst and max_sessions at least 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_sessions = max_sessions
        self.max_clients = max_clients
        self._buckets: dict[str, TokenBucket] = {}
        self._sessions: dict[str, int] = {}

    def allow(self, client: str, now: float) -> bool:
        """Take a token for one request from `client`; False when it has used up its rate."""
        key = client_key(client)
        bucket = self._buckets.pop(key, None) or TokenBucket(self.rate, self.burst, self.burst, now)
        self._buckets[key] = bucket  # re-inserted: the dict's order is least recently used first
        allowed = bucket.take(now)
        if len(self._buckets) > self.max_clients:
            self._prune(now)
        return allowed

    def _prune(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.level(now) >= self.burst]:
            del self._buckets[key]
        # Only under a flood from more clients than we keep: forget the least recently seen.
        while len(self._buckets) > self.max_clients:
            del self._buckets[next(iter(self._buckets))]

    def open(self, client: str) -> bool:
        """Count a new session from `client`; False (and not counted) when it has too many open."""
        key = client_key(client)
        count = self._sessions.get(key, 0)
        if count >= self.max_sessions:
            return False
        self._sessions[key] = count + 1
        return True

    def close(self, client: str) -> None:
        key = client_key(client)
        count = self._sessions.get(key, 0) - 1
        if count > 0:
            self._sessions[key] = count
        else:
            self._sessions.pop(key, None)

    def sessions(self, client: str) -> int:
        return self._sessions.get(client_key(client), 0)
