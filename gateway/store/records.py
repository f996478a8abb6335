"""The store's value types: enums and frozen records, detached from any database session.

The `Store` API returns these rather than ORM objects, so that a caller can keep them after the
session is gone (the CLI prints them, a verification node keeps them in its snapshot) and can
never write to the database by accident through an attribute.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field


class Mode(enum.Enum):
    """A user's forgery protection (seed 003, "Mechanism" and "Testing mode")."""

    OFF = "off"  # not opted in: nothing changes
    TESTING = "testing"  # sign; on failure warn in a header instead of rejecting
    FULL = "full"  # sign; reject forgeries and answer callouts


class EventKind(enum.Enum):
    """What happened to a message or callout; the values are stored and must stay stable."""

    REJECT = "reject"  # refused as a forgery (5xx)
    WARN = "warn"  # testing mode: a warning header instead of a refusal
    MALFORMED_BOUNCE = "malformed_bounce"  # a bounce-like message not sent to the envelope sender
    DEFER = "defer"  # temporary failure (4xx): store or upstream unavailable


class ResolutionKind(enum.Enum):
    """Where an address leads (seed 003, "Managed mail domains")."""

    USER = "user"  # one user: their primary or extra address, or a single-target alias chain to it
    MULTI_TARGET = "multi_target"  # an alias with several targets: not checked further
    UNKNOWN = "unknown"  # not an address of any user (or an alias to such an address)
    CYCLE = "cycle"  # an alias chain that comes back to itself: a configuration error
    TOO_DEEP = "too_deep"  # an alias chain longer than the depth limit: a configuration error


@dataclass(frozen=True, slots=True)
class User:
    id: int
    login: str
    primary_address: str
    mode: Mode
    is_admin: bool
    created_at: dt.datetime
    updated_at: dt.datetime
    #: Kept out of repr so that a logged record never carries it (design invariant 9).
    password_hash: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Domain:
    name: str
    description: str


@dataclass(frozen=True, slots=True)
class Alias:
    address: str
    #: Each target as given back to a person: a user's login, or an address.
    targets: tuple[str, ...]
    description: str = ""

    @property
    def multi_target(self) -> bool:
        return len(self.targets) > 1


@dataclass(frozen=True, slots=True)
class FixedTag:
    """A persistent tag for one (user, recipient) pair; `id` is what the signed address carries."""

    id: int
    user_id: int
    login: str
    recipient: str  # an address, or `*@domain`
    note: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True, slots=True)
class BlacklistEntry:
    signed_address: str
    base_address: str
    reason: str
    added_at: dt.datetime
    expires_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    at: dt.datetime
    kind: EventKind
    address: str
    reason: str
    user_id: int | None = None
    client: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to record (`Store.record_events`): an `Event` before the store gave it an id."""

    at: dt.datetime
    kind: EventKind
    address: str
    reason: str
    user_id: int | None = None
    client: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class EventCount:
    """How many events of one kind and reason happened on one UTC day (for the statistics pages)."""

    day: dt.date
    kind: EventKind
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class Resolution:
    """The answer to "whose address is this?".

    `via` lists the aliases followed, in order, starting with the address itself when it is an
    alias; it is empty for a user's own address. `user` is set only for `ResolutionKind.USER`.
    """

    kind: ResolutionKind
    address: str
    user: User | None = None
    via: tuple[str, ...] = ()

    @property
    def user_id(self) -> int | None:
        return self.user.id if self.user is not None else None
