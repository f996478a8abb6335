"""Checking a submitter's credentials (RFC 4954 SMTP AUTH): the store's hashes or Dovecot's.

An `Authenticator` answers one question, "is this the password of this login?", and the proxy
maps the answer to RFC 4954 replies: 235 on success, 535 5.7.8 on bad credentials, 454 4.7.0 when
the backend cannot answer (a database or Dovecot that is down must not look like a wrong
password, nor let anyone in).
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from .. import passwords
from ..config import Config
from ..store import NotFound, Store


class AuthOutcome(enum.Enum):
    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    login: str | None = None  # the canonical login on success

    @property
    def ok(self) -> bool:
        return self.outcome is AuthOutcome.OK


class Authenticator(Protocol):
    async def authenticate(self, username: str, password: str, client_address: str | None) -> AuthResult: ...


class StoreAuthenticator:
    """Argon2id hashes from the store, checked in a worker thread (hashing is slow on purpose)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _check(self, username: str, password: str) -> AuthResult:
        try:
            user = self.store.get_user(username)
        except NotFound:
            passwords.hash_password(password)  # spend the same time, so timing does not reveal logins
            return AuthResult(AuthOutcome.BAD_CREDENTIALS)
        except SQLAlchemyError:
            return AuthResult(AuthOutcome.UNAVAILABLE)
        if user.password_hash and passwords.verify_password(user.password_hash, password):
            return AuthResult(AuthOutcome.OK, user.login)
        return AuthResult(AuthOutcome.BAD_CREDENTIALS)

    async def authenticate(self, username: str, password: str, client_address: str | None) -> AuthResult:
        if not username or not password or len(username) > 254 or len(password) > 1024:
            return AuthResult(AuthOutcome.BAD_CREDENTIALS)
        return await asyncio.to_thread(self._check, username, password)


def authenticator_from(config: Config, store: Store) -> Authenticator:
    """The backend named by `[auth] backend`: "store" (Argon2id hashes) or "dovecot" (its auth socket)."""
    if config.auth.backend == "dovecot":
        # Imported here: dovecot_auth builds on this module's types.
        from .dovecot_auth import DovecotAuthenticator, SocketAddress

        strip = frozenset(config.site.domains) if config.auth.strip_domain else frozenset()
        address = SocketAddress.parse(config.auth.dovecot_socket)
        return DovecotAuthenticator(address, strip_domains=strip, timeout=config.auth.timeout)
    return StoreAuthenticator(store)
