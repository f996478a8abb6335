"""The alias walk as a pure function: any directory, any alias graph, always an answer."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from gateway.store.records import ResolutionKind
from gateway.store.resolve import MAX_ALIAS_DEPTH, Target, follow


class DictDirectory:
    def __init__(self, owners: dict[str, int], aliases: dict[str, list[Target]]) -> None:
        self.owners, self.aliases = owners, aliases

    def owner(self, address: str) -> int | None:
        return self.owners.get(address)

    def alias_targets(self, address: str) -> Sequence[Target] | None:
        return self.aliases.get(address)


def test_alias_with_a_user_target_ends_at_that_user() -> None:
    directory = DictDirectory({}, {"a@x": [Target(user_id=7)]})
    route = follow("a@x", directory)
    assert (route.kind, route.user_id, route.via) == (ResolutionKind.USER, 7, ("a@x",))


def test_alias_without_targets_leads_nowhere() -> None:
    assert follow("a@x", DictDirectory({}, {"a@x": []})).kind is ResolutionKind.UNKNOWN


def test_self_loop_is_a_cycle() -> None:
    route = follow("a@x", DictDirectory({}, {"a@x": [Target(address="a@x")]}))
    assert (route.kind, route.via) == (ResolutionKind.CYCLE, ("a@x", "a@x"))


def test_chain_of_exactly_the_depth_limit_is_followed_and_one_more_is_not() -> None:
    def chain(length: int) -> DictDirectory:
        aliases = {f"{n}@x": [Target(address=f"{n + 1}@x")] for n in range(length)}
        return DictDirectory({f"{length}@x": 1}, aliases)

    assert follow("0@x", chain(MAX_ALIAS_DEPTH)).kind is ResolutionKind.USER
    assert follow("0@x", chain(MAX_ALIAS_DEPTH + 1)).kind is ResolutionKind.TOO_DEEP


NODES = [f"n{i}@x" for i in range(6)]


@st.composite
def directories(draw: st.DrawFn) -> DictDirectory:
    """Random graphs: each node is a user's address, an alias (one or two targets), or nothing."""
    owners: dict[str, int] = {}
    aliases: dict[str, list[Target]] = {}
    for i, node in enumerate(NODES):
        role = draw(st.sampled_from(["owner", "alias", "alias", "nothing"]))
        if role == "owner":
            owners[node] = i
        elif role == "alias":
            count = draw(st.sampled_from([1, 1, 1, 2]))
            aliases[node] = [Target(address=draw(st.sampled_from(NODES))) for _ in range(count)]
    return DictDirectory(owners, aliases)


def _reference(start: str, directory: DictDirectory) -> ResolutionKind:
    """Walk without any cleverness: follow single targets until a user, a fork, a dead end or a repeat."""
    seen: list[str] = []
    node = start
    while node not in directory.owners:
        targets = directory.aliases.get(node)
        if not targets:
            return ResolutionKind.UNKNOWN
        if node in seen:
            return ResolutionKind.CYCLE
        seen.append(node)
        if len(targets) > 1:
            return ResolutionKind.MULTI_TARGET
        node = targets[0].address or ""
    return ResolutionKind.USER


@given(directories(), st.sampled_from(NODES))
def test_walk_agrees_with_a_naive_walk_on_any_small_graph(directory: DictDirectory, start: str) -> None:
    # Six nodes never make a chain longer than the depth limit, so TOO_DEEP cannot occur here.
    route = follow(start, directory)
    assert route.kind is _reference(start, directory)
    if route.kind is ResolutionKind.USER:
        end = directory.aliases[route.via[-1]][0].address if route.via else start
        assert end is not None and directory.owners[end] == route.user_id
