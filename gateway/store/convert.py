"""Checking values on the way in and turning rows into records on the way out."""

from __future__ import annotations

import datetime as dt
import re

from ..addresses import InvalidAddress, normalize_address, normalize_domain, normalize_recipient
from .errors import InvalidValue
from .models import DESCRIPTION_LENGTH, LOGIN_LENGTH, PASSWORD_HASH_LENGTH, BlacklistRow, EventRow, FixedTagRow, UserRow
from .records import BlacklistEntry, Event, FixedTag, User

# Logins are what people type at SMTP AUTH and on the web page; a whole address is allowed.
_LOGIN = re.compile(r"[a-z0-9][a-z0-9._@+-]*")


def login(text: str) -> str:
    candidate = text.strip().lower() if isinstance(text, str) else ""
    if not candidate:
        raise InvalidValue("a login must not be empty")
    if len(candidate) > LOGIN_LENGTH or not _LOGIN.fullmatch(candidate):
        raise InvalidValue(
            f"login {text.strip()!r} must be at most {LOGIN_LENGTH} letters, digits and . _ @ + -,"
            " starting with a letter or digit"
        )
    return candidate


def address(text: str) -> str:
    try:
        return normalize_address(text)
    except InvalidAddress as exc:
        raise InvalidValue(str(exc)) from None


def domain(text: str) -> str:
    try:
        return normalize_domain(text)
    except InvalidAddress as exc:
        raise InvalidValue(str(exc)) from None


def recipient(text: str) -> str:
    try:
        return normalize_recipient(text)
    except InvalidAddress as exc:
        raise InvalidValue(str(exc)) from None


def password_hash(value: str | None) -> str | None:
    """A stored password is a PHC-format hash (`$argon2id$...`); refusing anything else keeps a
    caller's slip from writing a plain password into the database."""
    if not value:
        return None
    if not isinstance(value, str) or not value.startswith("$") or len(value) > PASSWORD_HASH_LENGTH:
        raise InvalidValue("expected a password hash from gateway.passwords.hash_password, not a password")
    return value


def short_text(text: str, what: str, limit: int = DESCRIPTION_LENGTH) -> str:
    """A description, note or reason: one line of at most `limit` characters."""
    value = (text or "").strip()
    if len(value) > limit:
        raise InvalidValue(f"{what} is longer than {limit} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise InvalidValue(f"{what} must be one line without control characters")
    return value


#: What no database text column takes: NUL (PostgreSQL refuses it) and lone surrogates (octets of a
#: request that were not UTF-8, kept by `surrogateescape`; no UTF-8 encoder takes them).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """Wire text as a column can hold it: each unstorable character becomes U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)


def clip(text: str, limit: int) -> str:
    """Cut wire data to fit a column: events must be recorded even when the input is absurd."""
    text = storable(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def aware(moment: dt.datetime, what: str) -> dt.datetime:
    if not isinstance(moment, dt.datetime) or moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidValue(f"{what} must be a timezone-aware datetime")
    return moment.astimezone(dt.UTC)


def user(row: UserRow) -> User:
    return User(
        id=row.id,
        login=row.login,
        primary_address=row.primary_address,
        mode=row.mode,
        is_admin=row.is_admin,
        created_at=row.created_at,
        updated_at=row.updated_at,
        password_hash=row.password_hash,
    )


def fixed_tag(row: FixedTagRow) -> FixedTag:
    return FixedTag(
        id=row.id,
        user_id=row.user_id,
        login=row.user.login,
        recipient=row.recipient,
        note=row.note,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def blacklist_entry(row: BlacklistRow) -> BlacklistEntry:
    return BlacklistEntry(
        signed_address=row.signed_address,
        base_address=row.base_address,
        reason=row.reason,
        added_at=row.added_at,
        expires_at=row.expires_at,
    )


def event(row: EventRow) -> Event:
    return Event(
        id=row.id,
        at=row.at,
        kind=row.kind,
        address=row.address,
        reason=row.reason,
        user_id=row.user_id,
        client=row.client,
        detail=row.detail,
    )
