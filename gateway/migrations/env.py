"""Alembic environment of the store.

Normally run through `gateway.store.db.upgrade`, which passes an open connection in
`config.attributes["connection"]`. For writing a new revision from a source checkout:

    alembic -c gateway/migrations/alembic.ini -x url=sqlite:///dev.db upgrade head
    alembic -c gateway/migrations/alembic.ini -x url=sqlite:///dev.db revision --autogenerate -m "..."

then review the script by hand: it must give the same schema on SQLite and PostgreSQL
(tests/gateway/test_store_schema.py checks that).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from gateway.store.db import make_engine
from gateway.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: later revisions rebuild tables in batch mode.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database URL: alembic -x url=... (see gateway/migrations/env.py)")
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against a database")
run_migrations_online()
