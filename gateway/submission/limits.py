"""The submission proxy's limits, and the throttle that makes guessing passwords slow.

Each limit has its own reply, with an RFC 3463 enhanced status code, so a user (or their mail
client's log) can tell which one they met:

  - message size: advertised in EHLO as SIZE (RFC 1870); a larger SIZE= at MAIL, or more octets
    in DATA, gets `552 5.3.4` (RFC 1870 section 6; RFC 3463 X.3.4 "message too big for system");
  - recipients per message: `452 4.5.3` (RFC 5321 section 4.5.3.1.10 requires 452 here);
  - line length: a message line longer than `max_line_length` (998, RFC 5322 section 2.1.1) gets
    `500 5.5.2` after the data, RFC 5321 section 4.5.3.1.10's "500 Line too long". We refuse rather
    than fold: folding would break the DKIM signature and change what the user wrote;
  - commands per session: `421 4.7.0` and the connection is closed;
  - time: `421 4.4.2` and close. Each command line (and each AUTH exchange) must be complete
    within `idle_timeout` of the previous command (RFC 5321 section 4.5.3.2.7 suggests 5 minutes):
    the clock is not reset by partial lines, so a client that trickles a byte a second cannot hold
    a session. The message data has a deadline too (`DataDeadline`): it starts at `idle_timeout`
    and grows with each octet received by 1/`data_min_rate` seconds, never to more than
    `idle_timeout` ahead, so a message may take as long as it needs at an average of
    `data_min_rate` octets per second (Postfix's `smtpd_min_data_rate`, 500 by default) and no
    longer. A message cut off by a deadline is never relayed. A whole session lasts at most
    `session_seconds`, however busy;
  - failed logins: `AuthThrottle` below.

Pure: the caller passes the time (STYLE principle 2), so the tests need no sleep.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..clients import client_key
from ..config import SubmissionConfig

#: Clients whose failures are remembered at most; beyond that the least recently failing are forgotten.
MAX_CLIENTS = 10_000
#: The longest a single 535 reply is held back, whatever the doubling says.
MAX_DELAY = 30.0


@dataclass(frozen=True)
class Limits:
    max_message_size: int = 26_214_400
    max_recipients: int = 100
    max_line_length: int = 998
    max_commands: int = 1000
    idle_timeout: float = 300.0
    data_min_rate: int = 500
    session_seconds: float = 3600.0
    auth_max_failures: int = 5
    auth_lockout_seconds: float = 900.0
    auth_failure_delay: float = 1.0

    @classmethod
    def from_config(cls, config: SubmissionConfig) -> Limits:
        return cls(
            max_message_size=config.max_message_size,
            max_recipients=config.max_recipients,
            max_line_length=config.max_line_length,
            max_commands=config.max_commands,
            idle_timeout=config.idle_timeout,
            data_min_rate=config.data_min_rate,
            session_seconds=config.session_seconds,
            auth_max_failures=config.auth_max_failures,
            auth_lockout_seconds=config.auth_lockout_seconds,
            auth_failure_delay=config.auth_failure_delay,
        )


@dataclass(slots=True)
class DataDeadline:
    """When the message data must be complete: starts `limit` seconds ahead, and each octet
    received moves it 1/`min_rate` seconds on, but never more than `limit` seconds ahead of now
    (Postfix, `smtpd_min_data_rate` with `smtpd_per_request_deadline`)."""

    limit: float
    min_rate: int
    at: float

    @classmethod
    def start(cls, limit: float, min_rate: int, now: float) -> DataDeadline:
        return cls(limit, min_rate, now + limit)

    def received(self, octets: int, now: float) -> float:
        """Count `octets` that arrived at `now`; the seconds left (0 or less: too late)."""
        self.at = min(now + self.limit, self.at + octets / self.min_rate)
        return self.at - now


@dataclass(slots=True)
class _Failures:
    count: int
    last: float
    locked_until: float = 0.0


class AuthThrottle:
    """Failed AUTH attempts per client: a growing delay, then a temporary lockout.

    The n-th failure's `535 5.7.8` is held back `delay * 2**(n-1)` seconds (at most MAX_DELAY);
    after `max_failures` failures the client is locked out for `lockout_seconds`: every AUTH gets
    `454 4.7.0` (RFC 4954 section 6: "temporary authentication failure") without the password being
    checked, so a locked-out guesser learns nothing, right or wrong. Counting is per client, not per
    login: a lockout per login would let anyone lock any user out of their mail. Failures older
    than the lockout period are forgotten, so a typo a day never adds up to a lockout.
    """

    def __init__(self, max_failures: int, lockout_seconds: float, delay: float, max_clients: int = MAX_CLIENTS):
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self.delay = delay
        self.max_clients = max_clients
        self._clients: dict[str, _Failures] = {}

    def locked(self, client: str, now: float) -> float:
        """Seconds `client` stays locked out, or 0."""
        entry = self._current(client_key(client), now)
        return max(0.0, entry.locked_until - now) if entry else 0.0

    def failed(self, client: str, now: float) -> float:
        """Count a failure; the seconds to wait before answering it."""
        key = client_key(client)
        entry = self._current(key, now) or _Failures(0, now)
        entry.count += 1
        entry.last = now
        if entry.count >= self.max_failures:
            entry.locked_until = now + self.lockout_seconds
        self._clients.pop(key, None)
        self._clients[key] = entry  # re-inserted: the dict's order is least recently failing first
        while len(self._clients) > self.max_clients:
            del self._clients[next(iter(self._clients))]
        return min(MAX_DELAY, self.delay * 2.0 ** (entry.count - 1))

    def succeeded(self, client: str) -> None:
        self._clients.pop(client_key(client), None)

    def failures(self, client: str, now: float) -> int:
        entry = self._current(client_key(client), now)
        return entry.count if entry else 0

    def _current(self, key: str, now: float) -> _Failures | None:
        """The client's entry, unless its lockout ended or its last failure is old: then it is forgotten."""
        entry = self._clients.get(key)
        if entry is None:
            return None
        expired = entry.locked_until and now >= entry.locked_until
        stale = not entry.locked_until and now - entry.last >= self.lockout_seconds
        if expired or stale:
            del self._clients[key]
            return None
        return entry
