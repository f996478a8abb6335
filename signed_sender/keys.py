"""Keys and key rotation.

A keyring holds up to 32 secrets, each with a small id that travels inside every tag, so that a
verifier knows which secret to try without trying them all. Only the current key signs; every key
still in the ring verifies, which is what makes rotation painless: add a key, make it current, and
drop the old one once its last tags have expired.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from .errors import KeyringError

#: A native key id is one base32 character.
MAX_KEY_ID = 31
#: 128 bits: shorter secrets make the HMAC the weakest link instead of the tag length.
MIN_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True)
class Key:
    id: int
    secret: bytes = b""
    created: int = 0  # unix seconds; informational, for `keys list` and rotation decisions

    def __post_init__(self) -> None:
        if not 0 <= self.id <= MAX_KEY_ID:
            raise KeyringError(f"key id {self.id} is outside 0..{MAX_KEY_ID}")
        if len(self.secret) < MIN_SECRET_BYTES:
            raise KeyringError(f"key {self.id}: secret is shorter than {MIN_SECRET_BYTES} bytes")

    def __repr__(self) -> str:
        # Secrets never reach logs or tracebacks (design invariant 9).
        return f"Key(id={self.id}, created={self.created}, secret=<{len(self.secret)} bytes>)"


class Keyring(Mapping[int, Key]):
    """An immutable mapping of key id to Key, with one current (signing) key."""

    __slots__ = ("_current", "_keys")

    def __init__(self, keys: Iterable[Key], current: int) -> None:
        self._keys: dict[int, Key] = {}
        for key in keys:
            if key.id in self._keys:
                raise KeyringError(f"key id {key.id} appears twice")
            self._keys[key.id] = key
        if current not in self._keys:
            raise KeyringError(f"current key id {current} is not in the keyring")
        self._current = current

    @property
    def current(self) -> Key:
        return self._keys[self._current]

    def __getitem__(self, key_id: int) -> Key:
        return self._keys[key_id]

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._keys))

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"Keyring(ids={list(self)}, current={self._current})"

    def rotated(self, secret: bytes, created: int) -> Keyring:
        """A new ring whose current key is a fresh one with the next free id.

        Ids are reused round-robin: when all 32 are taken, the id after the current one is
        replaced, which is the oldest key if rotation has always gone through this method.
        """
        candidates = [(self._current + step) % (MAX_KEY_ID + 1) for step in range(1, MAX_KEY_ID + 2)]
        new_id = next((i for i in candidates if i not in self._keys), candidates[0])
        keys = [k for k in self._keys.values() if k.id != new_id]
        return Keyring([*keys, Key(new_id, secret, created)], new_id)

    def without(self, key_id: int) -> Keyring:
        """A ring with one retired key removed; the current key cannot be retired."""
        if key_id == self._current:
            raise KeyringError("the current signing key cannot be retired; rotate first")
        if key_id not in self._keys:
            raise KeyringError(f"no key with id {key_id}")
        return Keyring([k for k in self._keys.values() if k.id != key_id], self._current)
