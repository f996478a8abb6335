"""Blacklist ids are never handed out twice on SQLite either (AUTOINCREMENT).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

A verification node refreshes its in-memory blacklist incrementally, by reading the rows whose id
is above the highest one it has (gateway/snapshot.py, issue 7: reloading 10 M rows on every change
took 45 s). Without AUTOINCREMENT SQLite gives a new row the largest id + 1, so after a purge of the
newest rows a new leak report could take an id the node already saw, and be missed. PostgreSQL's
sequences never go back: nothing to do there. On SQLite the table is rebuilt from an explicit
definition (reflection would lose the CHECK constraint), keeping its rows and ids.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def _blacklist(autoincrement: bool) -> sa.Table:
    return sa.Table(
        "blacklist",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("signed_address", sa.String(length=254), nullable=False),
        sa.Column("base_address", sa.String(length=254), nullable=False),
        sa.Column("reason", sa.String(length=200), server_default="", nullable=False),
        sa.Column("added_at", UTC_TIME, nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=False),
        sa.CheckConstraint("signed_address = lower(signed_address)", name="ck_blacklist_signed_address_lowercase"),
        sa.PrimaryKeyConstraint("id", name="pk_blacklist"),
        sa.UniqueConstraint("signed_address", name="uq_blacklist_signed_address"),
        sa.Index("ix_blacklist_expires_at", "expires_at"),
        sqlite_autoincrement=autoincrement,
    )


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "blacklist",
        recreate="always",
        copy_from=_blacklist(autoincrement),
        table_kwargs={"sqlite_autoincrement": autoincrement},
    ):
        pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
