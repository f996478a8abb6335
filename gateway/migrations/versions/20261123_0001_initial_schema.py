"""Initial schema: users, addresses, managed domains, aliases, fixed tags, blacklist, events.

Revision ID: 0001
Revises:
Create Date: 2026-11-23

Written against gateway/store/models.py with plain SQLAlchemy types, so that later changes to the
models cannot change what this revision creates. Times are `DateTime(timezone=True)` (PostgreSQL
timestamptz; naive UTC text on SQLite), enums are short strings with a CHECK.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def _lowercase(column: str, table: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(f"{column} = lower({column})", name=op.f(f"ck_{table}_{column}_lowercase"))


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("login", sa.String(length=254), nullable=False),
        sa.Column("primary_address", sa.String(length=254), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("is_admin", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.CheckConstraint("mode IN ('off', 'testing', 'full')", name=op.f("ck_users_mode")),
        _lowercase("login", "users"),
        _lowercase("primary_address", "users"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("login", name=op.f("uq_users_login")),
        sa.UniqueConstraint("primary_address", name=op.f("uq_users_primary_address")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "domains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("description", sa.String(length=200), server_default="", nullable=False),
        _lowercase("name", "domains"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domains")),
        sa.UniqueConstraint("name", name=op.f("uq_domains_name")),
    )
    op.create_table(
        "addresses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        _lowercase("address", "addresses"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_addresses_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_addresses")),
        sa.UniqueConstraint("address", name=op.f("uq_addresses_address")),
    )
    op.create_index(op.f("ix_addresses_user_id"), "addresses", ["user_id"])
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("description", sa.String(length=200), server_default="", nullable=False),
        _lowercase("address", "aliases"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_aliases")),
        sa.UniqueConstraint("address", name=op.f("uq_aliases_address")),
    )
    op.create_table(
        "alias_targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alias_id", sa.Integer(), nullable=False),
        sa.Column("target_user_id", sa.Integer(), nullable=True),
        sa.Column("target_address", sa.String(length=254), nullable=True),
        sa.CheckConstraint(
            "(target_user_id IS NULL AND target_address IS NOT NULL)"
            " OR (target_user_id IS NOT NULL AND target_address IS NULL)",
            name=op.f("ck_alias_targets_one_target"),
        ),
        _lowercase("target_address", "alias_targets"),
        sa.ForeignKeyConstraint(
            ["alias_id"], ["aliases.id"], name=op.f("fk_alias_targets_alias_id_aliases"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["target_user_id"], ["users.id"], name=op.f("fk_alias_targets_target_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alias_targets")),
        sa.UniqueConstraint("alias_id", "target_address", name=op.f("uq_alias_targets_alias_id_target_address")),
        sa.UniqueConstraint("alias_id", "target_user_id", name=op.f("uq_alias_targets_alias_id_target_user_id")),
    )
    op.create_index(op.f("ix_alias_targets_target_user_id"), "alias_targets", ["target_user_id"])
    op.create_table(
        "fixed_tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=255), nullable=False),
        sa.Column("note", sa.String(length=200), server_default="", nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("revoked_at", UTC_TIME, nullable=True),
        _lowercase("recipient", "fixed_tags"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_fixed_tags_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fixed_tags")),
        # The id is inside signed addresses: SQLite must never reuse a deleted highest id.
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_fixed_tags_user_id"), "fixed_tags", ["user_id"])
    op.create_index(
        op.f("uq_fixed_tags_user_id_recipient_active"),
        "fixed_tags",
        ["user_id", "recipient"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )
    op.create_table(
        "blacklist",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("signed_address", sa.String(length=254), nullable=False),
        sa.Column("base_address", sa.String(length=254), nullable=False),
        sa.Column("reason", sa.String(length=200), server_default="", nullable=False),
        sa.Column("added_at", UTC_TIME, nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=False),
        _lowercase("signed_address", "blacklist"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blacklist")),
        sa.UniqueConstraint("signed_address", name=op.f("uq_blacklist_signed_address")),
    )
    op.create_index(op.f("ix_blacklist_expires_at"), "blacklist", ["expires_at"])
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=512), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("client", sa.String(length=255), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint("kind IN ('reject', 'warn', 'malformed_bounce', 'defer')", name=op.f("ck_events_kind")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_events_user_id_users"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_at"), "events", ["at"])
    op.create_index(op.f("ix_events_user_id_at"), "events", ["user_id", "at"])
    store_meta = op.create_table(
        "store_meta",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_store_meta_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_store_meta")),
    )
    op.bulk_insert(store_meta, [{"id": 1, "version": 0}])


def downgrade() -> None:
    dependents_first = (
        "store_meta",
        "events",
        "blacklist",
        "fixed_tags",
        "alias_targets",
        "aliases",
        "addresses",
        "domains",
        "users",
    )
    for table in dependents_first:
        op.drop_table(table)
