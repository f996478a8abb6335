"""What the store refuses, as exceptions whose message is one line a CLI can print as it is.

Database errors that are the caller's fault (a duplicate, a bad value) never escape as
SQLAlchemy's IntegrityError; errors of the database itself (connection refused, disk full)
stay SQLAlchemyError, so that services can answer them with a temporary failure (invariant 6).
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every refusal by the store."""


class NotFound(StoreError):
    """The thing named does not exist."""


class UnknownUser(NotFound):
    """No user has this login."""


class Duplicate(StoreError):
    """The thing to add exists already (a login, an address in any role, a domain)."""


class InvalidValue(StoreError, ValueError):
    """A value the store does not accept: a malformed address or login, an alias loop."""


class SchemaMismatch(StoreError):
    """The database is not at the schema revision this program was built for."""
