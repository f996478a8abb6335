"""What the pages use besides the request: the configuration, the store, the keys and the clock.

One `Services` per application, kept in `app.extensions`. The store is opened on first use, so
the application starts (and shows a 503 page) while the database is still down. The key file is
read on each use: `antiforgery keys rotate` replaces it, and the pages follow without a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app

from gateway import keyfile
from gateway.config import Config
from gateway.store import Store
from signed_sender import Keyring, Policy

from .throttle import LoginThrottle

EXTENSION = "antiforgery"


@dataclass
class Services:
    config: Config
    throttle: LoginThrottle
    clock: Callable[[], float] = time.time
    _store: Store | None = field(default=None, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:
                self._store = Store.open(self.config.store.url)
            return self._store

    def keyring(self) -> Keyring:
        return keyfile.load(self.config.signing.key_file)

    @property
    def policy(self) -> Policy:
        return self.config.signing.policy()

    def now(self) -> float:
        return self.clock()

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def install(app: Flask, services: Services) -> None:
    app.extensions[EXTENSION] = services


def services() -> Services:
    """The current application's services (inside a request or an application context)."""
    found: Services = current_app.extensions[EXTENSION]
    return found
