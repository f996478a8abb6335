"""The store's schema as SQLAlchemy 2 declarative models; the same tables on SQLite and PostgreSQL.

The initial Alembic revision creates exactly this schema (a test compares them on both
databases). Conventions:

* Every address, login and domain is stored lower-cased (a CHECK says so), compared by equality.
* Times are timezone-aware UTC in Python; SQLite keeps them as naive UTC text, PostgreSQL as
  `timestamptz`. `UTCDateTime` makes both look the same to the code.
* Enums are short strings with a CHECK listing the values: readable in `psql` and `sqlite3`,
  portable, and a new value is a one-line migration on either database.
* Constraint and index names come from `NAMING_CONVENTION`, so migrations can name them.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any, Generic, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from .records import EventKind, Mode

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: RFC 5321 section 4.5.3.1.3, less the angle brackets.
ADDRESS_LENGTH = 254
#: A login may be a whole address (many sites authenticate with one).
LOGIN_LENGTH = 254
#: `*@` and a domain of up to 253 characters.
RECIPIENT_LENGTH = 255
DESCRIPTION_LENGTH = 200
PASSWORD_HASH_LENGTH = 255
#: Events record what arrived on the wire, which may be anything; longer values are cut.
EVENT_ADDRESS_LENGTH = 512
EVENT_REASON_LENGTH = 32
EVENT_CLIENT_LENGTH = 255

E = TypeVar("E", bound=enum.Enum)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every database; naive datetimes are refused as a bug."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the store needs timezone-aware times")
        value = value.astimezone(dt.UTC)
        # SQLite has no time zones: keep UTC without an offset, so that text comparison is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class EnumString(TypeDecorator[E], Generic[E]):
    """An enum stored as its value in a short VARCHAR; pair it with `enum_check` on the table."""

    impl = String
    cache_ok = True

    def __init__(self, enum_class: type[E], length: int) -> None:
        super().__init__(length)
        self.enum_class = enum_class

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return str(self.enum_class(value).value)

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum_class(value)


def enum_check(column: str, enum_class: type[enum.Enum], name: str) -> CheckConstraint:
    values = ", ".join(f"'{member.value}'" for member in enum_class)
    return CheckConstraint(f"{column} IN ({values})", name=name)


def lowercase_check(column: str) -> CheckConstraint:
    """Stored in canonical form: equality lookups must not depend on how someone typed it."""
    return CheckConstraint(f"{column} = lower({column})", name=f"{column}_lowercase")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UserRow(Base):
    """A person who can log in and send mail; `mode` is their forgery protection."""

    __tablename__ = "users"
    __table_args__ = (
        enum_check("mode", Mode, "mode"),
        lowercase_check("login"),
        lowercase_check("primary_address"),
        # Ids appear in fixed tags' ownership and events: never hand out a deleted user's id again.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(LOGIN_LENGTH), unique=True)
    primary_address: Mapped[str] = mapped_column(String(ADDRESS_LENGTH), unique=True)
    mode: Mapped[Mode] = mapped_column(EnumString(Mode, 8))
    password_hash: Mapped[str | None] = mapped_column(String(PASSWORD_HASH_LENGTH))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())

    addresses: Mapped[list[AddressRow]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True, order_by="AddressRow.address"
    )


class DomainRow(Base):
    """A managed mail domain: we are authoritative for its addresses (seed 003, "Managed mail domains")."""

    __tablename__ = "domains"
    __table_args__ = (lowercase_check("name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    description: Mapped[str] = mapped_column(String(DESCRIPTION_LENGTH), server_default="")


class AddressRow(Base):
    """An extra address owned by exactly one user; the primary address lives in `users`."""

    __tablename__ = "addresses"
    __table_args__ = (lowercase_check("address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(ADDRESS_LENGTH), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)

    user: Mapped[UserRow] = relationship(back_populates="addresses")


class AliasRow(Base):
    """An address that forwards to one or more targets (a user, or any address)."""

    __tablename__ = "aliases"
    __table_args__ = (lowercase_check("address"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(ADDRESS_LENGTH), unique=True)
    description: Mapped[str] = mapped_column(String(DESCRIPTION_LENGTH), server_default="")

    targets: Mapped[list[AliasTargetRow]] = relationship(
        back_populates="alias", cascade="all, delete-orphan", passive_deletes=True, order_by="AliasTargetRow.id"
    )


class AliasTargetRow(Base):
    """One target of an alias: exactly one of a user or an address."""

    __tablename__ = "alias_targets"
    __table_args__ = (
        CheckConstraint(
            "(target_user_id IS NULL AND target_address IS NOT NULL)"
            " OR (target_user_id IS NOT NULL AND target_address IS NULL)",
            name="one_target",
        ),
        lowercase_check("target_address"),
        UniqueConstraint("alias_id", "target_user_id"),
        UniqueConstraint("alias_id", "target_address"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    alias_id: Mapped[int] = mapped_column(ForeignKey("aliases.id", ondelete="CASCADE"))
    target_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    target_address: Mapped[str | None] = mapped_column(String(ADDRESS_LENGTH))

    alias: Mapped[AliasRow] = relationship(back_populates="targets")
    target_user: Mapped[UserRow | None] = relationship()


class FixedTagRow(Base):
    """A persistent tag for mail from one user to one recipient (seed 003, "Envelope-dependent recipients").

    The id is part of the signed address, so it must never change and never be reused: rows are
    revoked, not deleted, and SQLite's AUTOINCREMENT keeps a deleted highest id from coming back.
    A revoked tag stays revoked: issuing again for the same pair makes a new row with a new id
    (a tag is usually revoked because it leaked). Hence uniqueness of (user, recipient) holds
    only among active rows: a partial unique index, which SQLite and PostgreSQL both have.
    """

    __tablename__ = "fixed_tags"
    __table_args__ = (
        lowercase_check("recipient"),
        Index(
            "uq_fixed_tags_user_id_recipient_active",
            "user_id",
            "recipient",
            unique=True,
            sqlite_where=text("revoked_at IS NULL"),
            postgresql_where=text("revoked_at IS NULL"),
        ),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    recipient: Mapped[str] = mapped_column(String(RECIPIENT_LENGTH))
    note: Mapped[str] = mapped_column(String(DESCRIPTION_LENGTH), server_default="")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())

    user: Mapped[UserRow] = relationship()


class BlacklistRow(Base):
    """A leaked signed address that must no longer verify; dropped once its tag has expired anyway."""

    __tablename__ = "blacklist"
    __table_args__ = (
        lowercase_check("signed_address"),
        # Verification nodes load only rows above the highest id they have seen (gateway.snapshot):
        # an id must never come back after the newest rows were purged.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    signed_address: Mapped[str] = mapped_column(String(ADDRESS_LENGTH), unique=True)
    base_address: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    reason: Mapped[str] = mapped_column(String(DESCRIPTION_LENGTH), server_default="")
    added_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)


class EventRow(Base):
    """Something rejected, flagged or deferred: when, what, why, for whom. Kept for the stats pages."""

    __tablename__ = "events"
    __table_args__ = (
        enum_check("kind", EventKind, "kind"),
        Index("ix_events_user_id_at", "user_id", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    kind: Mapped[EventKind] = mapped_column(EnumString(EventKind, 16))
    address: Mapped[str] = mapped_column(String(EVENT_ADDRESS_LENGTH))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(String(EVENT_REASON_LENGTH))
    client: Mapped[str | None] = mapped_column(String(EVENT_CLIENT_LENGTH))
    detail: Mapped[str | None] = mapped_column(Text)


class StoreMetaRow(Base):
    """The single row whose `version` every change to the directory increments.

    Verification nodes compare it with the version of their in-memory snapshot (polling on
    SQLite; on PostgreSQL the same transaction also sends a NOTIFY) and reload when it moved.
    """

    __tablename__ = "store_meta"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)
