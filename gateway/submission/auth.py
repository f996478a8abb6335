"""Checking a submitter's credentials (RFC 4954 SMTP AUTH): the store's hashes or Dovecot's.

An `Authenticator` answers one question, "is this the password of this login?", and the proxy
maps the answer to RFC 4954 replies: 235 on success, 535 5.7.8 on bad credentials, 454 4.7.0 when
the backend cannot answer (a database or Dovecot that is down must not look like a wrong
password, nor let anyone in).
"""

from __future__ import annotations

import asyncio
import enum
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
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


class CredentialCache:
    """Logins verified recently, so that a client that logs in for every message does not cost an
    Argon2id hash each time (as Dovecot's auth_cache; issue 7: one hash took 160 ms of CPU, which
    held the proxy to about eight logins a second per core).

    Only successes are kept, as an HMAC of the password under a key made at start and never
    stored, beside the stored hash it was checked against. A changed password (a new hash in the
    store) or a deleted user misses at once, since the store is still read at every login; a wrong
    password never matches; failures always pay the whole hash and the proxy's failure throttle.
    Entries live `ttl` seconds; the oldest go first beyond `size`.
    """

    def __init__(self, ttl: float, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.size, self.clock = ttl, size, clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[str, tuple[str, bytes, float]] = OrderedDict()
        self._lock = threading.Lock()  # checks run in worker threads

    def _mac(self, login: str, password: str) -> bytes:
        return hmac.digest(self._key, f"{login}\0{password}".encode("utf-8", "surrogatepass"), "sha256")

    def hit(self, login: str, password_hash: str, password: str) -> bool:
        if self.ttl <= 0:
            return False
        with self._lock:
            entry = self._entries.get(login)
        if entry is None:
            return False
        stored_hash, mac, expires = entry
        return (
            self.clock() < expires
            and hmac.compare_digest(stored_hash, password_hash)
            and hmac.compare_digest(mac, self._mac(login, password))
        )

    def remember(self, login: str, password_hash: str, password: str) -> None:
        if self.ttl <= 0:
            return
        entry = (password_hash, self._mac(login, password), self.clock() + self.ttl)
        with self._lock:
            self._entries[login] = entry
            self._entries.move_to_end(login)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class StoreAuthenticator:
    """Argon2id hashes from the store, checked in a worker thread (hashing is slow on purpose)."""

    def __init__(self, store: Store, cache: CredentialCache | None = None) -> None:
        self.store = store
        self.cache = cache or CredentialCache(ttl=0, size=0)

    def _check(self, username: str, password: str) -> AuthResult:
        try:
            user = self.store.get_user(username)
        except NotFound:
            passwords.hash_password(password)  # spend the same time, so timing does not reveal logins
            return AuthResult(AuthOutcome.BAD_CREDENTIALS)
        except SQLAlchemyError:
            return AuthResult(AuthOutcome.UNAVAILABLE)
        if not user.password_hash:
            return AuthResult(AuthOutcome.BAD_CREDENTIALS)
        if self.cache.hit(user.login, user.password_hash, password):
            return AuthResult(AuthOutcome.OK, user.login)
        if passwords.verify_password(user.password_hash, password):
            self.cache.remember(user.login, user.password_hash, password)
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
    return StoreAuthenticator(store, CredentialCache(config.auth.cache_seconds, config.auth.cache_size))
