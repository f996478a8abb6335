"""Whose address is this? Follow aliases to a user, as a pure function over a directory.

Seed 003, "Managed mail domains": an address that routes to one user gets that user's protection;
an alias that expands to several addresses is not checked any further. The walk is the same
for the store (queries) and for a verification node's in-memory snapshot (dictionaries), so it
takes the directory as an argument and does no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .records import ResolutionKind

#: Aliases followed at most; real chains are one or two long (a college alias to an @cam alias
#: to a user). A longer chain is a configuration error, reported rather than followed.
MAX_ALIAS_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Target:
    """One target of an alias: a user (by id) or an address, exactly one of them."""

    user_id: int | None = None
    address: str | None = None


class Directory(Protocol):
    def owner(self, address: str) -> int | None:
        """The id of the user whose primary or extra address this is, or None."""

    def alias_targets(self, address: str) -> Sequence[Target] | None:
        """The targets of the alias with this address, or None if it is not an alias."""


@dataclass(frozen=True, slots=True)
class Route:
    kind: ResolutionKind
    user_id: int | None = None
    #: The aliases followed, in order; for a cycle it ends with the alias met again.
    via: tuple[str, ...] = ()


def follow(address: str, directory: Directory, max_depth: int = MAX_ALIAS_DEPTH) -> Route:
    """Route a normalized (lower-case) address to a user, a multi-target alias, or nowhere."""
    via: list[str] = []
    current = address
    while True:
        owner = directory.owner(current)
        if owner is not None:
            return Route(ResolutionKind.USER, owner, tuple(via))
        targets = directory.alias_targets(current)
        if not targets:
            return Route(ResolutionKind.UNKNOWN, None, tuple(via))
        if current in via:
            return Route(ResolutionKind.CYCLE, None, (*via, current))
        if len(via) >= max_depth:
            return Route(ResolutionKind.TOO_DEEP, None, tuple(via))
        via.append(current)
        if len(targets) > 1:
            return Route(ResolutionKind.MULTI_TARGET, None, tuple(via))
        target = targets[0]
        if target.user_id is not None:
            return Route(ResolutionKind.USER, target.user_id, tuple(via))
        if target.address is None:
            return Route(ResolutionKind.UNKNOWN, None, tuple(via))
        current = target.address
