"""The store: SQLAlchemy models, Alembic migrations and the typed `Store` API over them.

SQLite (one node, the default) and PostgreSQL (many nodes) run the same code and schema.
"""

from .api import Store
from .base import NOTIFY_CHANNEL
from .db import current_revision, head_revision, make_engine, upgrade
from .errors import Duplicate, InvalidValue, NotFound, SchemaMismatch, StoreError, UnknownUser
from .records import (
    Alias,
    BlacklistEntry,
    Domain,
    Event,
    EventCount,
    EventKind,
    FixedTag,
    Mode,
    NewEvent,
    Resolution,
    ResolutionKind,
    User,
)
from .resolve import MAX_ALIAS_DEPTH

__all__ = [
    "MAX_ALIAS_DEPTH",
    "NOTIFY_CHANNEL",
    "Alias",
    "BlacklistEntry",
    "Domain",
    "Duplicate",
    "Event",
    "EventCount",
    "EventKind",
    "FixedTag",
    "InvalidValue",
    "Mode",
    "NewEvent",
    "NotFound",
    "Resolution",
    "ResolutionKind",
    "SchemaMismatch",
    "Store",
    "StoreError",
    "UnknownUser",
    "User",
    "current_revision",
    "head_revision",
    "make_engine",
    "upgrade",
]
