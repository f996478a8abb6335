"""An in-memory copy of the directory, so that no verification request waits on the database.

Design, "Scale": every verification node keeps a snapshot of opt-ins, aliases, fixed tags and the
blacklist, and replaces it whole when the store's version moves. A snapshot is immutable: a
request sees one consistent directory even while a refresh is building the next one.

The blacklist is the one part that grows large (issue 7: 10 M leaked tags took 45 s and 1.5 GiB as
strings). It is held as keyed hashes (`gateway.tagset`) and carried over from the previous
snapshot: a refresh reads only the rows added since, unless rows were deleted (a purge), which
costs one full reload.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Connection, Engine, func, select

from .store.models import (
    AddressRow,
    AliasRow,
    AliasTargetRow,
    BlacklistRow,
    DomainRow,
    FixedTagRow,
    StoreMetaRow,
    UserRow,
)
from .store.records import Mode, ResolutionKind
from .store.resolve import Route, Target, follow
from .tagset import EMPTY, TagHashes

#: Rows fetched per round trip while streaming the large tables.
STREAM_BATCH = 100_000
_MODES = {mode.value: mode for mode in Mode}


class Blacklist(Protocol):
    """What deciding needs of the blacklist: a TagHashes, or a plain set of strings in tests."""

    def __contains__(self, signed_form: object) -> bool: ...

    def __len__(self) -> int: ...


class SnapshotUser(NamedTuple):
    """A named tuple, not a frozen dataclass: a million of them are made at each load, 5x faster."""

    id: int
    login: str
    primary_address: str
    mode: Mode


class UserTable(Mapping[int, SnapshotUser]):
    """The users as three plain dicts, id -> login, address and mode value; a SnapshotUser per lookup.

    Issue 7: a million SnapshotUser tuples hold a Mode member each, so Python's cyclic garbage
    collector walked every one of them: a full collection took 0.55 s, a pause for every request in
    flight. A dict whose keys and values are all strings and ints is never tracked by the collector
    (even one of tuples is, 0.07 s per pass), so these cost it nothing.
    """

    __slots__ = ("_address", "_login", "_mode", "_protected")

    def __init__(self, login: dict[int, str], address: dict[int, str], mode: dict[int, str]) -> None:
        self._login, self._address, self._mode = login, address, mode
        off = Mode.OFF.value
        self._protected = sum(1 for value in mode.values() if value != off)

    def __getitem__(self, user_id: int) -> SnapshotUser:
        return SnapshotUser(user_id, self._login[user_id], self._address[user_id], _MODES[self._mode[user_id]])

    def __iter__(self) -> Iterator[int]:
        return iter(self._login)

    def __len__(self) -> int:
        return len(self._login)

    @property
    def protected(self) -> int:
        return self._protected


@dataclass(frozen=True)
class Snapshot:
    version: int
    users: Mapping[int, SnapshotUser] = field(default_factory=dict)
    owners: Mapping[str, int] = field(default_factory=dict)  # primary and extra addresses
    aliases: Mapping[str, tuple[Target, ...]] = field(default_factory=dict)
    fixed_tags: Mapping[int, int] = field(default_factory=dict)  # active fixed tag id -> user id
    #: (user id, recipient address or "*@domain") -> active fixed tag id, for signing at submission.
    fixed_recipients: Mapping[tuple[int, str], int] = field(default_factory=dict)
    blacklist: Blacklist = EMPTY  # canonical signed forms (Verdict.signed_form)
    domains: frozenset[str] = frozenset()  # managed mail domains from the store
    logins: Mapping[str, int] = field(default_factory=dict)  # login -> user id

    # gateway.store.resolve.Directory
    def owner(self, address: str) -> int | None:
        return self.owners.get(address)

    def alias_targets(self, address: str) -> Sequence[Target] | None:
        return self.aliases.get(address)

    # gateway.tagcheck.TagFacts
    def is_blacklisted(self, signed_form: str) -> bool:
        return signed_form in self.blacklist

    def fixed_tag_user(self, fixed_id: int) -> int | None:
        return self.fixed_tags.get(fixed_id)

    def user_of(self, address: str) -> int | None:
        return self.route(address).user_id

    def route(self, address: str) -> Route:
        """Follow aliases from an address compared case-insensitively."""
        return follow(address.lower(), self)

    def fixed_tag_for(self, user_id: int, recipient: str) -> int | None:
        """The fixed tag for mail from this user to `recipient`; the exact address beats `*@domain`."""
        recipient = recipient.lower()
        exact = self.fixed_recipients.get((user_id, recipient))
        if exact is not None:
            return exact
        return self.fixed_recipients.get((user_id, "*@" + recipient.rpartition("@")[2]))

    def user(self, user_id: int | None) -> SnapshotUser | None:
        return None if user_id is None else self.users.get(user_id)

    @property
    def protected_users(self) -> int:
        if isinstance(self.users, UserTable):
            return self.users.protected
        return sum(1 for u in self.users.values() if u.mode is not Mode.OFF)


def current_version(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(StoreMetaRow.version).where(StoreMetaRow.id == 1)) or 0)


def _stream(connection: Connection, sql: str) -> Iterator[list[Any]]:
    """Rows of a constant query in batches, straight from the driver, in the load's transaction.

    Issue 7: SQLAlchemy's result rows cost about 4 us each, 45 s for 10 M blacklist rows; the
    driver's own tuples cost a quarter of that. PostgreSQL gets a server-side cursor, so that the
    rows arrive batch by batch instead of all at once.
    """
    driver = connection.connection.driver_connection
    assert driver is not None
    postgresql = connection.dialect.name == "postgresql"
    cursor = driver.cursor(name="antiforgery_snapshot") if postgresql else driver.cursor()
    try:
        cursor.execute(sql)
        while rows := cursor.fetchmany(STREAM_BATCH):
            yield rows
    finally:
        cursor.close()


def _time_literal(connection: Connection, moment: dt.datetime) -> str:
    """A UTC time as a SQL literal compared correctly with `UTCDateTime` columns (it has no quotes to escape)."""
    moment = moment.astimezone(dt.UTC)
    if connection.dialect.name == "sqlite":  # naive UTC text, SQLAlchemy's storage format
        return "'" + moment.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"
    return "'" + moment.isoformat() + "'"


def _load_blacklist(connection: Connection, now: dt.datetime, previous: Blacklist | None) -> TagHashes:
    """The unexpired blacklist: the previous one plus the rows added since, or all of it.

    Ids only grow (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), so the rows above the
    previous high-water id are exactly the additions, provided nothing at or below it was deleted:
    the counts tell. Entries that expired since stay until the next full load; their tags no
    longer verify anyway (the verdict is `expired` before the blacklist is consulted).
    """
    rows, high_water = connection.execute(select(func.count(), func.max(BlacklistRow.id))).one()
    high_water = high_water or 0
    live = BlacklistRow.expires_at > now
    if isinstance(previous, TagHashes) and previous.high_water <= high_water:
        newer = BlacklistRow.id > previous.high_water
        added = connection.scalar(select(func.count()).where(newer)) or 0
        if rows - added == previous.rows:
            added_forms = connection.scalars(select(BlacklistRow.signed_address).where(newer, live))
            return previous.with_added(added_forms, high_water, rows)
    table = BlacklistRow.__tablename__
    sql = f"SELECT signed_address FROM {table} WHERE expires_at > {_time_literal(connection, now)}"
    forms = (row[0] for batch in _stream(connection, sql) for row in batch)
    return TagHashes.build(forms, size_hint=rows, high_water=high_water, rows=rows)


def _load_users(connection: Connection) -> tuple[UserTable, dict[str, int], dict[str, int]]:
    """The users, and their primary addresses and logins -> id."""
    login: dict[int, str] = {}
    address: dict[int, str] = {}
    mode: dict[int, str] = {}
    canonical = {value: value for value in _MODES}  # one string object per mode, not one per row
    for batch in _stream(connection, f"SELECT id, login, primary_address, mode FROM {UserRow.__tablename__}"):
        for user_id, user_login, user_address, user_mode in batch:
            login[user_id] = user_login
            address[user_id] = user_address
            mode[user_id] = canonical[user_mode]
    owners = dict(zip(address.values(), address.keys(), strict=True))
    logins = dict(zip(login.values(), login.keys(), strict=True))
    return UserTable(login, address, mode), owners, logins


def load(engine: Engine, now: dt.datetime, previous: Snapshot | None = None) -> Snapshot:
    """Read the whole directory in one transaction, so the copy is consistent with its version.

    With `previous`, its blacklist is reused and only extended where that is exact.
    """
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            version = int(connection.scalar(select(StoreMetaRow.version).where(StoreMetaRow.id == 1)) or 0)
            users, owners, logins = _load_users(connection)
            # A Result has keys(), so dict.update() would treat it as a mapping: iterate explicitly.
            owners.update(
                (address, user_id)
                for address, user_id in connection.execute(select(AddressRow.address, AddressRow.user_id))
            )
            aliases: dict[str, list[Target]] = {}
            for address, user_id, target in connection.execute(
                select(AliasRow.address, AliasTargetRow.target_user_id, AliasTargetRow.target_address)
                .join(AliasTargetRow, AliasTargetRow.alias_id == AliasRow.id)
                .order_by(AliasTargetRow.id)
            ):
                aliases.setdefault(address, []).append(Target(user_id=user_id, address=target))
            fixed: dict[int, int] = {}
            fixed_recipients: dict[tuple[int, str], int] = {}
            for fixed_id, user_id, recipient in connection.execute(
                select(FixedTagRow.id, FixedTagRow.user_id, FixedTagRow.recipient).where(
                    FixedTagRow.revoked_at.is_(None)
                )
            ):
                fixed[fixed_id] = user_id
                fixed_recipients[(user_id, recipient)] = fixed_id
            blacklist = _load_blacklist(connection, now, previous.blacklist if previous is not None else None)
            domains = frozenset(connection.scalars(select(DomainRow.name)))
    return Snapshot(
        version=version,
        users=users,
        owners=owners,
        aliases={k: tuple(v) for k, v in aliases.items()},
        fixed_tags=fixed,
        fixed_recipients=fixed_recipients,
        blacklist=blacklist,
        domains=domains,
        logins=logins,
    )


__all__ = ["ResolutionKind", "Snapshot", "SnapshotUser", "current_version", "load"]
