"""The blacklist as the snapshot holds it: 64-bit keyed hashes of signed forms, not the strings.

Issue 7 measured the snapshot of a store with 10,000,000 blacklisted tags: as a frozenset of strings
it took 45 s to load and 1.5 GiB of memory, twice that while a refresh built the next copy, and
every change to the store loaded it all again. The verifier only ever asks "is this signed form
listed?", so it keeps 8 bytes per tag: a keyed 64-bit hash, in one sorted array per bucket (about
80 MiB for 10 M tags), built from hashes streamed out of the database.

A collision can only make a genuine tag look blacklisted, never let a forged one pass: a hash
match is refused (a false "blacklisted") with probability about n / 2^64 per verified tag, 5e-13
for 10 M entries. The key is secret and random per process, so nobody can aim a collision at a
particular address either.

Additions since the last full build live in a small frozenset beside the shared base, so a
refresh after a tag was reported costs the new rows only (`gateway.snapshot.load`). Both parts are
immutable: a request always sees one consistent set.
"""

from __future__ import annotations

import bisect
import hashlib
import secrets
import sys
from array import array
from collections.abc import Callable, Iterable

#: Additions kept beside the base before they are merged into it.
MAX_RECENT = 100_000
#: Largest number of buckets (sorted runs); small sets use fewer, so a test snapshot stays tiny.
MAX_BUCKET_BITS = 16


def _blake2b_hash(key: bytes) -> Callable[[str], int]:
    def tag_hash(form: str) -> int:
        digest = hashlib.blake2b(form.encode("utf-8", "surrogatepass"), digest_size=8, key=key).digest()
        return int.from_bytes(digest, "little", signed=True)

    return tag_hash


def _choose_hash() -> Callable[[str], int]:
    """Python's own str hash where it is a keyed 64-bit SipHash (PEP 456, the default): it runs in C,
    five times faster than blake2b here, with a random per-process key. Where hash randomisation is
    off (PYTHONHASHSEED=0) or the hash is narrower, a keyed blake2b takes its place."""
    info = sys.hash_info
    if sys.flags.hash_randomization and info.width == 64 and info.algorithm.startswith("siphash"):
        return hash
    return _blake2b_hash(secrets.token_bytes(16))


tag_hash: Callable[[str], int] = _choose_hash()


def _bucket_bits(count: int) -> int:
    """About 64 hashes per bucket, at most 2^16 buckets."""
    return min(MAX_BUCKET_BITS, (count // 64).bit_length())


class TagHashes:
    """An immutable set of signed forms, stored as keyed hashes: `form in tags`, `len(tags)`.

    `high_water` and `rows` describe the database rows it was built from (the largest id seen, and
    how many rows up to it existed), so that the next load can tell "only new rows" from "rows were
    deleted" (see `gateway.snapshot`).
    """

    __slots__ = ("_flat", "_mask", "_offsets", "_recent", "high_water", "rows")

    def __init__(
        self, flat: array[int], offsets: array[int], recent: frozenset[int], high_water: int, rows: int
    ) -> None:
        self._flat = flat
        self._offsets = offsets
        self._mask = len(offsets) - 2  # buckets are a power of two
        self._recent = recent
        self.high_water = high_water
        self.rows = rows

    @classmethod
    def from_hashes(cls, hashes: Iterable[int], size_hint: int, high_water: int = 0, rows: int = 0) -> TagHashes:
        """Sort the hashes into buckets by their low bits; each bucket becomes one sorted run.

        One pass, no intermediate copy: at 10 M tags this loop is most of the load time.
        """
        mask = (1 << _bucket_bits(size_hint)) - 1
        buckets: list[list[int]] = [[] for _ in range(mask + 1)]
        for value in hashes:
            buckets[value & mask].append(value)
        flat, offsets = array("q"), array("q", [0])
        for bucket in buckets:
            bucket.sort()
            flat.extend(bucket)
            offsets.append(len(flat))
        return cls(flat, offsets, frozenset(), high_water, rows)

    @classmethod
    def build(cls, forms: Iterable[str], size_hint: int = 0, high_water: int = 0, rows: int = 0) -> TagHashes:
        """From signed forms; `size_hint` (about how many there are) sizes the buckets."""
        if not size_hint:
            forms = list(forms)
            size_hint = len(forms)
        return cls.from_hashes(map(tag_hash, forms), size_hint, high_water, rows)

    def with_added(self, forms: Iterable[str], high_water: int, rows: int) -> TagHashes:
        """A new set with these forms added; this one is unchanged (a request may be reading it)."""
        added = frozenset(map(tag_hash, forms))
        recent = self._recent | added
        if len(recent) <= MAX_RECENT:
            return TagHashes(self._flat, self._offsets, recent, high_water, rows)
        merged = [*self._flat, *recent]
        return TagHashes.from_hashes(merged, len(merged), high_water, rows)

    def _has_hash(self, value: int) -> bool:
        bucket = value & self._mask
        low, high = self._offsets[bucket], self._offsets[bucket + 1]
        at = bisect.bisect_left(self._flat, value, low, high)
        return (at < high and self._flat[at] == value) or value in self._recent

    def __contains__(self, form: object) -> bool:
        return isinstance(form, str) and self._has_hash(tag_hash(form))

    def __len__(self) -> int:
        return len(self._flat) + len(self._recent)

    def memory_bytes(self) -> int:
        """The arrays' size: what the blacklist costs in the snapshot (the recent set is small)."""
        return self._flat.itemsize * len(self._flat) + self._offsets.itemsize * len(self._offsets)


EMPTY = TagHashes.build(())
