"""The store's transactions: one per method, and the write lock and version every change takes.

Writes to the directory (users, addresses, domains, aliases, fixed tags, blacklist) first take
the store's write lock: `SELECT ... FOR UPDATE` on the version row on PostgreSQL, `BEGIN
IMMEDIATE` on SQLite. Writers are thus serialized, which keeps the checks that span tables (an
address is a primary address, an extra address or an alias, never two of them) free of races.
A write that changed something increments the version in the same transaction and, on
PostgreSQL, sends `NOTIFY antiforgery_store` with the new version, delivered on commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Self

from sqlalchemy import Engine, func, select, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from . import db
from .errors import SchemaMismatch, StoreError, UnknownUser
from .models import StoreMetaRow, UserRow

#: PostgreSQL channel on which each change announces the new version.
NOTIFY_CHANNEL = "antiforgery_store"

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(slots=True)
class Write:
    session: Session
    #: Set to False by a write that turned out to change nothing, so that the version stays.
    changed: bool = True


class StoreBase:
    def __init__(self, engine: Engine, *, clock: Clock = utc_now) -> None:
        self.engine = engine
        self._clock = clock
        self._reads = sessionmaker(engine, expire_on_commit=False)
        # The option makes the SQLite "begin" hook say BEGIN IMMEDIATE: take the write lock at once.
        self._writes = sessionmaker(engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False)

    @classmethod
    def open(cls, url: str | URL, *, clock: Clock = utc_now, check_schema: bool = True) -> Self:
        """Connect to the store at `url`; refuse a database not at this program's schema revision."""
        engine = db.make_engine(url)
        if check_schema:
            try:
                have, want = db.current_revision(engine), db.head_revision()
            except BaseException:
                engine.dispose()
                raise
            if have != want:
                engine.dispose()
                raise SchemaMismatch(
                    f"the database schema is at revision {have or 'none'} but this program needs {want}:"
                    " upgrade it first (antiforgery init)"
                )
        return cls(engine, clock=clock)

    @staticmethod
    def upgrade(target: str | URL | Engine) -> str:
        """Create or upgrade the schema to the newest revision; return that revision."""
        return db.upgrade(target)

    def close(self) -> None:
        self.engine.dispose()

    def version(self) -> int:
        """Moves on every change to the directory; equal versions mean equal directory contents."""
        with self._reads() as session:
            found = session.scalar(select(StoreMetaRow.version).where(StoreMetaRow.id == 1))
        if found is None:
            raise SchemaMismatch("the store has no version row: upgrade the database first")
        return found

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._reads() as session:
            yield session

    @contextmanager
    def _write(self) -> Iterator[Write]:
        """A locked write transaction; IntegrityError leaves it only as a one-line StoreError."""
        try:
            with self._writes.begin() as session:
                locked = session.scalar(select(StoreMetaRow.version).where(StoreMetaRow.id == 1).with_for_update())
                if locked is None:
                    raise SchemaMismatch("the store has no version row: upgrade the database first")
                write = Write(session)
                yield write
                session.flush()
                if write.changed:
                    self._bump(session)
        except IntegrityError as exc:
            detail = str(exc.orig).splitlines()[0] if exc.orig is not None else "a constraint"
            raise StoreError(f"the change conflicts with the stored data ({detail})") from None

    @staticmethod
    def _bump(session: Session) -> None:
        session.execute(update(StoreMetaRow).where(StoreMetaRow.id == 1).values(version=StoreMetaRow.version + 1))
        if session.get_bind().dialect.name == "postgresql":
            version = session.scalar(select(StoreMetaRow.version).where(StoreMetaRow.id == 1))
            session.execute(select(func.pg_notify(NOTIFY_CHANNEL, str(version))))

    @staticmethod
    def _user_row(session: Session, login: str) -> UserRow:
        key = login.strip().lower() if isinstance(login, str) else ""
        row = session.scalar(select(UserRow).where(UserRow.login == key))
        if row is None:
            raise UnknownUser(f"no user with login {key!r}")
        return row
