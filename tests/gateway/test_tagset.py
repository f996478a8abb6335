"""The blacklist as keyed hashes: membership as a set of strings, immutable, cheap to extend."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import tagset
from gateway.tagset import TagHashes

FORMS = [f"u{i}=sa{i:014d}@example.ac.uk" for i in range(5000)]


def test_members_are_found_and_others_are_not() -> None:
    tags = TagHashes.build(FORMS)
    assert len(tags) == len(FORMS)
    assert all(form in tags for form in FORMS)
    assert not any(f"v{i}=sa{i:014d}@example.ac.uk" in tags for i in range(5000))
    assert 42 not in tags  # type: ignore[operator]


def test_empty_set_has_nothing() -> None:
    assert len(tagset.EMPTY) == 0 and "a=sabc@example.org" not in tagset.EMPTY


def test_adding_makes_a_new_set_and_leaves_the_old_one_as_it_was() -> None:
    old = TagHashes.build(FORMS[:10], high_water=10, rows=10)
    new = old.with_added(FORMS[10:20], high_water=20, rows=20)
    assert all(form in new for form in FORMS[:20]) and (new.high_water, new.rows) == (20, 20)
    assert not any(form in old for form in FORMS[10:20]) and old.high_water == 10


def test_many_additions_are_merged_into_the_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tagset, "MAX_RECENT", 100)
    tags = TagHashes.build(FORMS[:1000])
    for start in range(1000, 5000, 50):
        tags = tags.with_added(FORMS[start : start + 50], start + 50, start + 50)
    assert len(tags._recent) <= 100
    assert all(form in tags for form in FORMS)


def test_the_fallback_hash_is_keyed_and_64_bits() -> None:
    one, other = tagset._blake2b_hash(b"k" * 16), tagset._blake2b_hash(b"j" * 16)
    assert one("alice=sa@example.org") != other("alice=sa@example.org")
    assert -(2**63) <= one("alice=sa@example.org") < 2**63


@settings(max_examples=50, deadline=None)
@given(st.sets(st.text(max_size=30), max_size=300), st.lists(st.text(max_size=30), max_size=50))
def test_behaves_as_a_set_of_strings(members: set[str], probes: list[str]) -> None:
    tags = TagHashes.build(members)
    for probe in [*members, *probes]:
        assert (probe in tags) == (probe in members)
