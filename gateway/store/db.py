"""Engines and schema migrations: one code path for SQLite (one node) and PostgreSQL (many nodes).

Migrations are the only way the schema is made: `upgrade` runs the Alembic scripts shipped in
`gateway/migrations`, configured in code, so no alembic.ini has to be found at run time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

#: PostgreSQL advisory lock key held while migrating: an arbitrary constant, "antiforg" in ASCII.
MIGRATION_LOCK_KEY = 0x616E7469666F7267

#: How long an SQLite writer waits for another one before giving up with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 5000


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin (see _sqlite_on_begin):
    # the module's own implicit BEGIN skips DDL and SELECT, which breaks migrations and reads.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")  # off by default in SQLite, per connection
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        # WAL: readers (verification polling the version) never block the writer, nor it them.
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, much faster
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # Writers ask for IMMEDIATE (execution option `sqlite_begin`): they take the write lock before
    # reading, so a reader's snapshot can never go stale under them ("database is locked" at commit).
    mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
    if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
        raise ValueError(f"sqlite_begin must be DEFERRED, IMMEDIATE or EXCLUSIVE, not {mode!r}")
    connection.exec_driver_sql(f"BEGIN {mode}")


def _normalize_url(url: str | URL) -> URL:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver we depend on; SQLAlchemy's default for plain postgresql:// is psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


#: Backends the schema and its migrations are tested on (tests run on both).
BACKENDS = ("sqlite", "postgresql")


def check_url(url: str) -> None:
    """ValueError saying what is wrong with a store URL, before anything connects: otherwise a
    mistyped port or a driver that is not installed surfaces as an internal error at first use.
    The message never repeats the URL, which may hold a password (invariant 9)."""
    try:
        parsed = _normalize_url(url)
    except ArgumentError:
        raise ValueError("not a database URL (e.g. sqlite:///antiforgery.db, postgresql://user@host/db)") from None
    except ValueError:  # SQLAlchemy parses the port with int(); its message may quote the password
        raise ValueError("the port in the database URL is not a number") from None
    backend = parsed.get_backend_name()
    if backend not in BACKENDS:
        raise ValueError(f"the store runs on {' or '.join(BACKENDS)}, not {backend}")
    try:
        parsed.get_dialect().import_dbapi()
    except ImportError as exc:
        extra = " (pip install 'antiforgery[postgresql]')" if backend == "postgresql" else ""
        raise ValueError(f"the {parsed.drivername} driver is not installed: {exc}{extra}") from None


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine configured for the store: SQLite with foreign keys, WAL and a busy timeout,
    PostgreSQL (via psycopg 3, also for a plain `postgresql://` URL) with connection pre-ping."""
    parsed = _normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(parsed, **kwargs)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
    return engine


#: Runs of the migration transaction when SQLite refuses its lock at once (see `upgrade`).
_SQLITE_UPGRADE_ATTEMPTS = 10


def _migrate(engine: Engine, revision: str) -> None:
    # Nodes started together must not both migrate: SQLite takes its write lock at BEGIN,
    # PostgreSQL an advisory lock held to the end of the transaction.
    with engine.execution_options(sqlite_begin="IMMEDIATE").begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        command.upgrade(alembic_config(connection), revision)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic configured in code; `connection`, if given, is the one the migrations run on."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@contextmanager
def _engine_for(target: str | URL | Engine) -> Iterator[Engine]:
    if isinstance(target, Engine):
        yield target
        return
    engine = make_engine(target)
    try:
        yield engine
    finally:
        engine.dispose()


def head_revision() -> str:
    """The schema revision this program was built for."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError(f"no Alembic revisions found in {MIGRATIONS_DIR}")
    return head


def current_revision(target: str | URL | Engine) -> str | None:
    """The revision the database is at; None for a database the migrations have never touched."""
    with _engine_for(target) as engine, engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(target: str | URL | Engine, revision: str = "head") -> str:
    """Bring the database to `revision` (default: the newest) in one transaction; return the revision."""
    with _engine_for(target) as engine:
        for attempt in range(1, _SQLITE_UPGRADE_ATTEMPTS + 1):
            try:
                _migrate(engine, revision)
                break
            except OperationalError as exc:
                # Nodes creating one new SQLite file at once can meet SQLite's "database is locked"
                # without its busy timeout (switching the new file to WAL, or a lock upgrade it
                # refuses rather than deadlock: seen once in CI with three nodes), or after it
                # (a lock held longer). The migration is one transaction, so it is simply run
                # again; by then another node may have done it, leaving nothing to do.
                locked = engine.dialect.name == "sqlite" and "database is locked" in str(exc.orig)
                if not locked or attempt == _SQLITE_UPGRADE_ATTEMPTS:
                    raise
                time.sleep(0.05 * attempt)
        result = current_revision(engine)
    if result is None:
        raise RuntimeError("the migrations ran but the database has no revision")
    return result
