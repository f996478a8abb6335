"""The migrations make exactly the models' schema, on SQLite and PostgreSQL, and its rules hold."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from gateway.store import SchemaMismatch, Store, current_revision, head_revision, make_engine, upgrade
from gateway.store.db import SQLITE_BUSY_TIMEOUT_MS, alembic_config
from gateway.store.models import Base


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    engine = make_engine(store_url)
    yield engine
    engine.dispose()


def _index_definitions(engine: Engine) -> dict[str, str]:
    """Index name -> its CREATE INDEX text, from the catalog (reflection drops partial predicates)."""
    if engine.dialect.name == "sqlite":
        query = "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    else:
        query = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"
    with engine.connect() as connection:
        return {name: sql for name, sql in connection.execute(text(query))}


def test_upgrade_head_creates_exactly_the_models_schema(engine: Engine) -> None:
    upgrade(engine)
    with engine.connect() as connection:
        # SQLite reflects a '' server default as a different expression: only PostgreSQL compares them.
        options = {"compare_type": True, "compare_server_default": engine.dialect.name == "postgresql"}
        diff = compare_metadata(MigrationContext.configure(connection, opts=options), Base.metadata)
    assert diff == []


def test_migrated_schema_has_the_models_check_constraints(engine: Engine) -> None:
    # compare_metadata does not look at CHECK constraints; they carry rules (modes, lower case).
    upgrade(engine)
    inspector = inspect(engine)
    for table in Base.metadata.sorted_tables:
        expected = {c.name for c in table.constraints if isinstance(c, CheckConstraint)}
        assert {c["name"] for c in inspector.get_check_constraints(table.name)} == expected, table.name


def _squeeze(sql: str) -> str:
    return "".join(ch for ch in sql.lower() if ch not in " ()")


def test_migrated_partial_indexes_keep_their_predicate(engine: Engine) -> None:
    # Reflection drops the WHERE of a partial index, so compare_metadata cannot see it: read the catalog.
    upgrade(engine)
    definitions = _index_definitions(engine)
    dialect = engine.dialect.name
    partial = [
        index
        for table in Base.metadata.sorted_tables
        for index in table.indexes
        if index.dialect_options[dialect]["where"] is not None
    ]
    assert [index.name for index in partial] == ["uq_fixed_tags_user_id_recipient_active"]
    for index in partial:
        where = _squeeze(str(index.dialect_options[dialect]["where"]))
        assert where in _squeeze(definitions[str(index.name)]), definitions[str(index.name)]


def test_sqlite_tables_whose_ids_must_not_come_back_use_autoincrement(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    upgrade(engine)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all()
        tables: dict[str, str] = {name: sql for name, sql in rows}
    engine.dispose()
    for table in Base.metadata.sorted_tables:
        assert ("AUTOINCREMENT" in tables[table.name]) == bool(table.dialect_options["sqlite"]["autoincrement"])


def test_revision_is_none_before_and_head_after_upgrade(engine: Engine) -> None:
    assert current_revision(engine) is None
    assert upgrade(engine) == head_revision()
    assert current_revision(engine) == head_revision()


def test_upgrade_twice_changes_nothing(engine: Engine) -> None:
    upgrade(engine)
    upgrade(engine)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id, version FROM store_meta")).all() == [(1, 0)]


def test_nodes_upgrading_at_once_both_succeed(store_url: str) -> None:
    # Separate processes, as nodes are (Alembic's module-level context is not for threads).
    script = "import sys; from gateway.store import upgrade; print(upgrade(sys.argv[1]))"
    nodes = [
        subprocess.Popen(
            [sys.executable, "-c", script, store_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outcomes = [node.communicate(timeout=60) for node in nodes]
    assert [(node.returncode, out.strip()) for node, (out, _) in zip(nodes, outcomes, strict=True)] == [
        (0, head_revision())
    ] * len(nodes), "\n".join(err[-3000:] for _, err in outcomes)  # whole tracebacks, not a cut repr


def test_an_sqlite_upgrade_locked_out_longer_than_the_busy_timeout_is_run_again(tmp_path: Path) -> None:
    """Another process holds the new file's lock past SQLite's busy timeout (5 s): the first try
    fails with "database is locked", the next one, after the lock is gone, migrates."""
    path = tmp_path / "store.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE held (x)")
    release = threading.Timer(SQLITE_BUSY_TIMEOUT_MS / 1000 + 0.5, holder.rollback)
    release.start()
    started = time.monotonic()
    try:
        assert upgrade(f"sqlite:///{path}") == head_revision()
    finally:
        release.join()
        holder.close()
    assert time.monotonic() - started > SQLITE_BUSY_TIMEOUT_MS / 1000  # it did wait out a refusal


def test_downgrade_to_base_removes_every_table_and_upgrade_restores_them(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert set(inspect(engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}


def test_open_refuses_a_database_without_the_schema(store_url: str) -> None:
    with pytest.raises(SchemaMismatch, match="upgrade"):
        Store.open(store_url)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO users (login, primary_address, mode, created_at, updated_at)"
        " VALUES ('bob', 'bob@example.org', 'on', :t, :t)",
        "INSERT INTO users (login, primary_address, mode, created_at, updated_at)"
        " VALUES ('Bob', 'bob@example.org', 'off', :t, :t)",
        "INSERT INTO users (login, primary_address, mode, created_at, updated_at)"
        " VALUES ('bob', 'Bob@example.org', 'off', :t, :t)",
        "INSERT INTO alias_targets (alias_id, target_user_id, target_address) VALUES (1, 1, 'x@example.org')",
        "INSERT INTO alias_targets (alias_id, target_user_id, target_address) VALUES (1, NULL, NULL)",
        "INSERT INTO addresses (address, user_id) VALUES ('x@example.org', 999)",
        "INSERT INTO events (at, kind, address, reason) VALUES (:t, 'accept', 'x@example.org', 'valid')",
        "INSERT INTO store_meta (id, version) VALUES (2, 0)",
    ],
    ids=[
        "unknown-mode",
        "uppercase-login",
        "uppercase-address",
        "alias-target-both",
        "alias-target-neither",
        "dangling-foreign-key",
        "unknown-event-kind",
        "second-version-row",
    ],
)
def test_migrated_schema_refuses_rows_that_break_its_rules(engine: Engine, statement: str) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (id, login, primary_address, mode, created_at, updated_at)"
                " VALUES (1, 'alice', 'alice@example.org', 'off', :t, :t)"
            ),
            {"t": "2026-01-01 00:00:00"},
        )
        connection.execute(text("INSERT INTO aliases (id, address) VALUES (1, 'list@example.org')"))
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text(statement), {"t": "2026-01-01 00:00:00"})


def test_sqlite_engine_enforces_foreign_keys_and_uses_wal(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    engine.dispose()


def test_plain_postgresql_url_uses_psycopg_3(postgresql_url: str) -> None:
    plain = postgresql_url.replace("postgresql+psycopg://", "postgresql://", 1)
    engine = make_engine(plain)
    assert engine.dialect.driver == "psycopg"
    engine.dispose()
