"""The database fixtures hand out real, empty, private databases on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import create_engine, text


def test_store_url_is_an_empty_writable_database(store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE probe (n INTEGER)"))  # fails if a test left one behind
            connection.execute(text("INSERT INTO probe VALUES (1)"))
            assert connection.execute(text("SELECT n FROM probe")).scalar_one() == 1
    finally:
        engine.dispose()


def test_postgresql_url_names_a_fresh_session_database(postgresql_url: str) -> None:
    engine = create_engine(postgresql_url)
    try:
        with engine.connect() as connection:
            name = connection.execute(text("SELECT current_database()")).scalar_one()
    finally:
        engine.dispose()
    assert name.startswith("antiforgery_test_")
