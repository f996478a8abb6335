"""What every command needs, loaded lazily: a `keys list` must work with the database down."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TextIO

from signed_sender import Keyring, Policy

from .. import config, keyfile
from ..store import Store


class UsageError(Exception):
    """Bad input found after parsing (a value argparse cannot check)."""


@dataclass
class Context:
    config_path: Path
    out: TextIO
    err: TextIO
    clock: float | None = None  # --at, for reproducible answers
    _store: Store | None = field(default=None, init=False)

    @cached_property
    def config(self) -> config.Config:
        return config.load(self.config_path)

    @cached_property
    def keyring(self) -> Keyring:
        return keyfile.load(self.config.signing.key_file)

    @property
    def policy(self) -> Policy:
        return self.config.signing.policy()

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store.open(self.config.store.url)
        return self._store

    def now(self) -> float:
        return time.time() if self.clock is None else self.clock

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

    def say(self, line: str) -> None:
        print(line, file=self.out)
