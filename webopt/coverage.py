"""Which addresses a user's protection covers: their own, and aliases that lead only to them.

Seed 003, "Managed mail domains": "if a user opts in to the forgery protection system then all
their aliases get equivalent protection"; an alias that expands to several addresses is not
checked. Every alias found is confirmed with `Store.resolve`, the same walk the verification
service makes, so the page never promises protection the service would not give.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.store import Alias, ResolutionKind, Store


@dataclass(frozen=True, slots=True)
class Coverage:
    addresses: tuple[str, ...]  # the user's own: primary first
    aliases: tuple[Alias, ...]  # single-target aliases leading to the user, possibly through others
    shared: tuple[Alias, ...]  # multi-target aliases naming the user or an address above: not protected


def coverage(store: Store, login: str) -> Coverage:
    addresses = store.addresses_of(login)
    reaches = {login, *addresses}
    aliases = store.list_aliases()
    found: list[Alias] = []
    growing = True
    while growing:  # aliases of aliases: follow single-target chains outwards
        growing = False
        for alias in aliases:
            if alias not in found and not alias.multi_target and alias.targets[0] in reaches:
                found.append(alias)
                reaches.add(alias.address)
                growing = True
    confirmed = []
    for alias in found:
        resolution = store.resolve(alias.address)
        if resolution.kind is ResolutionKind.USER and resolution.user is not None and resolution.user.login == login:
            confirmed.append(alias)
    shared = [a for a in aliases if a.multi_target and reaches.intersection(a.targets)]
    return Coverage(tuple(addresses), tuple(sorted(confirmed, key=lambda a: a.address)), tuple(shared))
