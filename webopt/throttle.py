"""Login throttling: failed password logins counted per client and per login name.

After `max_failures` failures within `lockout_seconds`, that client or that login is refused
for `lockout_seconds` (HTTP 429), so a password cannot be guessed from one address, nor one
account's password from many. Counts live in this process only: under a WSGI server with N
worker processes an attacker gets up to N times the allowance, which is still a slow trickle.
The clock is passed in, so tests need no sleep (STYLE principle 2).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.clients import client_key as network_key

#: Keys remembered at most; the oldest are forgotten first, so a flood cannot exhaust memory.
MAX_TRACKED = 10_000


def client_key(remote_addr: str | None) -> str:
    """The client's throttle key (gateway.clients: IPv4 address or IPv6 /64), apart from login keys."""
    return f"client:{network_key(remote_addr or 'unknown')}"


def login_key(login: str) -> str:
    return f"login:{login.strip().lower()}"


@dataclass(slots=True)
class _Record:
    failures: int
    first: float
    locked_until: float = 0.0


class LoginThrottle:
    def __init__(
        self, max_failures: int, lockout_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self._clock = clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, *keys: str) -> float:
        """Seconds until every one of `keys` may try again; 0 when none is locked out."""
        now = self._clock()
        with self._lock:
            waits = [record.locked_until - now for key in keys if (record := self._records.get(key)) is not None]
        return max([0.0, *waits])

    def failed(self, *keys: str) -> None:
        """Count one failure against each key; the last allowed failure starts the lockout."""
        now = self._clock()
        with self._lock:
            for key in keys:
                record = self._records.pop(key, None)
                if record is None or now - record.first > self.lockout_seconds:
                    record = _Record(0, now)
                record.failures += 1
                if record.failures >= self.max_failures:
                    record.locked_until = now + self.lockout_seconds
                self._records[key] = record
            while len(self._records) > MAX_TRACKED:
                self._records.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        """A correct password clears these keys' counts. Callers pass the login only: clearing the
        client too would let someone with an account reset their address's count between guesses."""
        with self._lock:
            for key in keys:
                self._records.pop(key, None)
