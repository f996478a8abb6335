"""The Store API on SQLite and PostgreSQL: users, addresses, aliases, resolution, fixed tags,
the blacklist, events and the version row."""

from __future__ import annotations

import datetime as dt
import re
import threading
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from gateway import passwords
from gateway.store import (
    MAX_ALIAS_DEPTH,
    NOTIFY_CHANNEL,
    Duplicate,
    EventKind,
    InvalidValue,
    Mode,
    NotFound,
    ResolutionKind,
    Store,
    StoreError,
    UnknownUser,
)

START = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[Store]:
    Store.upgrade(store_url)
    store = Store.open(store_url, clock=clock)
    yield store
    store.close()


@pytest.fixture
def alice(store: Store) -> int:
    return store.add_user("alice", "alice@example.org", mode=Mode.FULL).id


# --- users and addresses ------------------------------------------------------------------------


def test_added_user_is_stored_lowercased_with_mode_and_times(store: Store, clock: Clock) -> None:
    user = store.add_user("  Alice ", "Alice@Example.ORG", mode=Mode.TESTING, is_admin=True)
    assert (user.login, user.primary_address, user.mode, user.is_admin) == (
        "alice",
        "alice@example.org",
        Mode.TESTING,
        True,
    )
    assert user.created_at == user.updated_at == START
    assert store.get_user("ALICE") == user
    assert user.created_at.tzinfo is dt.UTC


def test_user_defaults_to_mode_off_without_password(store: Store) -> None:
    user = store.add_user("bob", "bob@example.org")
    assert (user.mode, user.password_hash, user.is_admin) == (Mode.OFF, None, False)


def test_users_are_listed_by_login(store: Store) -> None:
    for login in ("carol", "alice", "bob"):
        store.add_user(login, f"{login}@example.org")
    assert [u.login for u in store.list_users()] == ["alice", "bob", "carol"]


def test_set_mode_changes_mode_and_updated_at(store: Store, alice: int, clock: Clock) -> None:
    later = clock.advance(hours=1)
    user = store.set_mode("alice", Mode.OFF)
    assert (user.mode, user.created_at, user.updated_at) == (Mode.OFF, START, later)
    assert store.get_user("alice").mode is Mode.OFF


def test_set_mode_accepts_the_mode_value_as_text(store: Store, alice: int) -> None:
    assert store.set_mode("alice", "testing").mode is Mode.TESTING  # type: ignore[arg-type]


def test_unknown_mode_is_refused(store: Store) -> None:
    with pytest.raises(InvalidValue, match="off, testing, full"):
        store.add_user("bob", "bob@example.org", mode="on")  # type: ignore[arg-type]


def test_password_hash_round_trips_through_the_store(store: Store, alice: int) -> None:
    store.set_password_hash("alice", passwords.hash_password("correct horse"))
    stored = store.get_user("alice").password_hash
    assert stored is not None
    assert passwords.verify_password(stored, "correct horse")
    assert not passwords.verify_password(stored, "Correct horse")
    assert "password_hash" not in repr(store.get_user("alice"))


def test_password_hash_can_be_removed(store: Store, alice: int) -> None:
    store.set_password_hash("alice", passwords.hash_password("pw"))
    assert store.set_password_hash("alice", None).password_hash is None


def test_a_plain_password_is_refused_where_a_hash_belongs(store: Store, alice: int) -> None:
    with pytest.raises(InvalidValue, match="password hash"):
        store.set_password_hash("alice", "correct horse")
    with pytest.raises(InvalidValue, match="password hash"):
        store.add_user("bob", "bob@example.org", password_hash="hunter2")


def test_set_admin_grants_and_revokes(store: Store, alice: int) -> None:
    assert store.set_admin("alice", True).is_admin
    assert not store.set_admin("alice", False).is_admin


def test_duplicate_login_is_refused(store: Store, alice: int) -> None:
    with pytest.raises(Duplicate, match="login alice exists"):
        store.add_user("ALICE", "other@example.org")


@pytest.mark.parametrize("taken", ["alice@example.org", "ALICE@example.org", "a.smith@example.org", "team@example.org"])
def test_an_address_in_use_in_any_role_cannot_be_a_new_primary_address(store: Store, alice: int, taken: str) -> None:
    store.add_address("alice", "a.smith@example.org")
    store.add_alias("team@example.org", ["alice"])
    with pytest.raises(Duplicate, match="already"):
        store.add_user("bob", taken)


@pytest.mark.parametrize("taken", ["alice@example.org", "a.smith@example.org", "team@example.org"])
def test_an_address_in_use_in_any_role_cannot_be_an_extra_address(store: Store, alice: int, taken: str) -> None:
    store.add_user("bob", "bob@example.org")
    store.add_address("alice", "a.smith@example.org")
    store.add_alias("team@example.org", ["alice"])
    with pytest.raises(Duplicate, match="already"):
        store.add_address("bob", taken.upper())


def test_addresses_of_lists_the_primary_address_first(store: Store, alice: int) -> None:
    assert store.add_address("alice", "Smith@Example.org") == "smith@example.org"
    store.add_address("alice", "a.smith@example.org")
    assert store.addresses_of("alice") == ["alice@example.org", "a.smith@example.org", "smith@example.org"]


@pytest.mark.parametrize("call", ["get_user", "set_mode", "add_address", "addresses_of", "add_fixed_tag"])
def test_unknown_login_raises_unknown_user(store: Store, call: str) -> None:
    args = {
        "get_user": ("nobody",),
        "set_mode": ("nobody", Mode.FULL),
        "add_address": ("nobody", "x@example.org"),
        "addresses_of": ("nobody",),
        "add_fixed_tag": ("nobody", "list@example.net"),
    }[call]
    with pytest.raises(UnknownUser, match="no user with login 'nobody'"):
        getattr(store, call)(*args)


@pytest.mark.parametrize(
    "address",
    ["alice", "alice@@example.org", "@example.org", "alice@", "al ice@example.org", "alice@exa_mple.org", "a\n@x.org"],
)
def test_malformed_address_is_refused_with_one_line(store: Store, address: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        store.add_user("bob", address)
    assert "\n" not in str(caught.value)


def test_address_limits_are_octets_64_for_the_local_part_and_254_in_all(store: Store) -> None:
    store.add_user("ok", "a" * 64 + "@example.org")
    with pytest.raises(InvalidValue, match="64 octets"):
        store.add_user("long", "a" * 65 + "@example.org")
    with pytest.raises(InvalidValue, match="64 octets"):
        store.add_user("utf8", "é" * 33 + "@example.org")
    domain = ".".join(["d" * 60] * 4) + ".org"  # 247 characters
    store.add_user("max", "abcdef@" + domain)  # 254
    with pytest.raises(InvalidValue, match="254 octets"):
        store.add_user("huge", "abcdefg@" + domain)


@pytest.mark.parametrize("login", ["", "-alice", "al ice", "al/ice", "a" * 255])
def test_malformed_login_is_refused(store: Store, login: str) -> None:
    with pytest.raises(InvalidValue, match="login"):
        store.add_user(login, "x@example.org")


def test_login_may_be_a_whole_address(store: Store) -> None:
    assert store.add_user("Alice@Example.org", "alice@example.org").login == "alice@example.org"


# --- managed domains ----------------------------------------------------------------------------


def test_domains_are_stored_lowercased_and_listed_by_name(store: Store) -> None:
    store.add_domain("Chem.Example.AC.UK.", "Chemistry")
    store.add_domain("cam.example.ac.uk")
    assert [(d.name, d.description) for d in store.list_domains()] == [
        ("cam.example.ac.uk", ""),
        ("chem.example.ac.uk", "Chemistry"),
    ]
    assert store.is_managed_domain("CHEM.example.ac.uk")
    assert not store.is_managed_domain("example.com")


def test_duplicate_domain_is_refused(store: Store) -> None:
    store.add_domain("chem.example.ac.uk")
    with pytest.raises(Duplicate, match="already managed"):
        store.add_domain("CHEM.example.ac.uk")


def test_malformed_domain_is_refused(store: Store) -> None:
    with pytest.raises(InvalidValue, match="not a valid domain"):
        store.add_domain("chem..example")


# --- aliases and resolution ---------------------------------------------------------------------


def test_primary_address_resolves_to_its_user(store: Store, alice: int) -> None:
    resolution = store.resolve("alice@example.org")
    assert resolution.kind is ResolutionKind.USER
    assert resolution.user is not None and resolution.user.login == "alice" and resolution.user.mode is Mode.FULL
    assert resolution.via == ()


def test_extra_address_resolves_to_its_user(store: Store, alice: int) -> None:
    store.add_address("alice", "a.smith@chem.example.ac.uk")
    assert store.resolve("a.smith@chem.example.ac.uk").user_id == alice


def test_resolution_ignores_case(store: Store, alice: int) -> None:
    store.add_alias("Team@Chem.Example.ac.uk", ["ALICE"])
    assert store.resolve("ALICE@EXAMPLE.ORG").user_id == alice
    assert store.resolve("team@CHEM.example.AC.uk").user_id == alice
    assert store.user_of("Alice@Example.Org") == alice


def test_single_target_alias_to_a_login_resolves_to_that_user(store: Store, alice: int) -> None:
    alias = store.add_alias("secretary@chem.example.ac.uk", ["alice"], "the department secretary")
    assert (alias.targets, alias.multi_target) == (("alice",), False)
    resolution = store.resolve("secretary@chem.example.ac.uk")
    assert (resolution.kind, resolution.user_id) == (ResolutionKind.USER, alice)
    assert resolution.via == ("secretary@chem.example.ac.uk",)


def test_single_target_alias_to_an_address_resolves_to_its_owner(store: Store, alice: int) -> None:
    store.add_alias("as123@cam.example.ac.uk", ["Alice@Example.org"])
    assert store.resolve("as123@cam.example.ac.uk").user_id == alice


def test_alias_chain_resolves_to_the_user_at_its_end(store: Store, alice: int) -> None:
    store.add_alias("as123@cam.example.ac.uk", ["alice@example.org"])
    store.add_alias("alice.smith@chem.example.ac.uk", ["as123@cam.example.ac.uk"])
    resolution = store.resolve("alice.smith@chem.example.ac.uk")
    assert resolution.user_id == alice
    assert resolution.via == ("alice.smith@chem.example.ac.uk", "as123@cam.example.ac.uk")


def test_alias_may_point_at_an_address_that_becomes_an_alias_later(store: Store, alice: int) -> None:
    store.add_alias("old@chem.example.ac.uk", ["new@chem.example.ac.uk"])
    assert store.resolve("old@chem.example.ac.uk").kind is ResolutionKind.UNKNOWN
    store.add_alias("new@chem.example.ac.uk", ["alice"])
    assert store.resolve("old@chem.example.ac.uk").user_id == alice


def test_multi_target_alias_is_not_followed(store: Store, alice: int) -> None:
    store.add_user("bob", "bob@example.org")
    alias = store.add_alias("office@chem.example.ac.uk", ["alice", "bob@example.org"])
    assert alias.multi_target
    resolution = store.resolve("office@chem.example.ac.uk")
    assert (resolution.kind, resolution.user) == (ResolutionKind.MULTI_TARGET, None)


def test_single_alias_to_a_multi_target_alias_is_multi_target(store: Store, alice: int) -> None:
    store.add_alias("office@chem.example.ac.uk", ["alice", "someone@example.net"])
    store.add_alias("enquiries@chem.example.ac.uk", ["office@chem.example.ac.uk"])
    assert store.resolve("enquiries@chem.example.ac.uk").kind is ResolutionKind.MULTI_TARGET


def test_alias_to_an_outside_address_and_unknown_addresses_resolve_to_unknown(store: Store) -> None:
    store.add_alias("fwd@chem.example.ac.uk", ["someone@example.net"])
    assert store.resolve("fwd@chem.example.ac.uk").kind is ResolutionKind.UNKNOWN
    assert store.resolve("nobody@example.org").kind is ResolutionKind.UNKNOWN
    assert store.resolve("not an address").kind is ResolutionKind.UNKNOWN
    assert store.user_of("nobody@example.org") is None


def test_alias_that_would_close_a_loop_is_refused(store: Store) -> None:
    store.add_alias("a@example.org", ["b@example.org"])
    store.add_alias("b@example.org", ["c@example.org"])
    loop = "loop: c@example.org -> a@example.org -> b@example.org -> c@example.org"
    with pytest.raises(InvalidValue, match=re.escape(loop)):
        store.add_alias("c@example.org", ["a@example.org"])
    assert store.resolve("a@example.org").kind is ResolutionKind.UNKNOWN  # the refused alias is not stored


def test_alias_to_itself_is_refused(store: Store) -> None:
    with pytest.raises(InvalidValue, match="itself"):
        store.add_alias("a@example.org", ["A@example.org"])


def test_cycle_made_behind_the_api_resolves_to_cycle(store: Store) -> None:
    store.add_alias("a@example.org", ["b@example.org"])
    store.add_alias("b@example.org", ["c@example.org"])
    with store.engine.begin() as connection:  # as a careless import script might
        connection.execute(
            text("UPDATE alias_targets SET target_address = 'a@example.org' WHERE target_address = 'c@example.org'")
        )
    resolution = store.resolve("a@example.org")
    assert resolution.kind is ResolutionKind.CYCLE
    assert resolution.via == ("a@example.org", "b@example.org", "a@example.org")


def test_alias_chain_longer_than_the_limit_is_refused(store: Store, alice: int) -> None:
    previous = "alice@example.org"
    for n in range(MAX_ALIAS_DEPTH):
        store.add_alias(f"hop{n}@example.org", [previous])
        previous = f"hop{n}@example.org"
    assert store.resolve(previous).user_id == alice
    with pytest.raises(InvalidValue, match="too long a chain"):
        store.add_alias("onemore@example.org", [previous])


def test_alias_target_that_is_neither_login_nor_address_is_refused(store: Store) -> None:
    with pytest.raises(InvalidValue, match="neither a user's login nor an address"):
        store.add_alias("a@example.org", ["nobody"])


def test_alias_needs_a_target_and_no_target_twice(store: Store, alice: int) -> None:
    with pytest.raises(InvalidValue, match="at least one target"):
        store.add_alias("a@example.org", [])
    with pytest.raises(InvalidValue, match="twice"):
        store.add_alias("a@example.org", ["alice", "ALICE"])


def test_alias_address_must_be_free(store: Store, alice: int) -> None:
    store.add_alias("team@example.org", ["alice"])
    with pytest.raises(Duplicate, match="already an alias"):
        store.add_alias("TEAM@example.org", ["alice"])
    with pytest.raises(Duplicate, match="primary address of alice"):
        store.add_alias("alice@example.org", ["x@example.net"])


def test_aliases_are_listed_with_logins_and_addresses_as_targets(store: Store, alice: int) -> None:
    store.add_alias("team@example.org", ["alice", "Ext@Example.net"], "the team")
    store.add_alias("boss@example.org", ["alice"])
    listed = store.list_aliases()
    assert [(a.address, a.targets, a.description) for a in listed] == [
        ("boss@example.org", ("alice",), ""),
        ("team@example.org", ("alice", "ext@example.net"), "the team"),
    ]


# --- fixed tags ---------------------------------------------------------------------------------


def test_fixed_tag_is_issued_once_per_user_and_recipient(store: Store, alice: int) -> None:
    tag = store.add_fixed_tag("alice", "List-Request@Lists.Example.net", note="ezmlm")
    assert (tag.login, tag.recipient, tag.note) == ("alice", "list-request@lists.example.net", "ezmlm")
    assert tag.active
    assert store.add_fixed_tag("alice", "list-request@lists.example.net") == tag
    assert store.get_fixed_tag(tag.id) == tag
    assert store.fixed_tag_user(tag.id) == alice


def test_fixed_tag_recipient_may_be_a_whole_domain(store: Store, alice: int) -> None:
    domain_tag = store.add_fixed_tag("alice", "*@Lists.Example.net")
    exact = store.add_fixed_tag("alice", "special@lists.example.net")
    assert domain_tag.recipient == "*@lists.example.net"
    assert store.fixed_tag_for("alice", "Any@lists.example.net") == domain_tag
    assert store.fixed_tag_for("alice", "special@lists.example.net") == exact
    assert store.fixed_tag_for("alice", "someone@example.net") is None


def test_revoked_fixed_tag_stays_revoked_and_reissue_gets_a_new_id(store: Store, alice: int, clock: Clock) -> None:
    tag = store.add_fixed_tag("alice", "list@example.net")
    revoked_at = clock.advance(days=1)
    revoked = store.revoke_fixed_tag(tag.id)
    assert (revoked.active, revoked.revoked_at) == (False, revoked_at)
    assert store.fixed_tag_user(tag.id) is None
    again = store.add_fixed_tag("alice", "list@example.net")
    assert again.id > tag.id and again.active
    assert store.get_fixed_tag(tag.id).revoked_at == revoked_at
    assert [t.id for t in store.list_fixed_tags("alice")] == [again.id]
    assert [t.id for t in store.list_fixed_tags(include_revoked=True)] == [tag.id, again.id]


def test_fixed_tag_ids_are_never_reused_even_after_a_delete(store: Store, alice: int) -> None:
    first = store.add_fixed_tag("alice", "one@example.net")
    second = store.add_fixed_tag("alice", "two@example.net")
    with store.engine.begin() as connection:
        connection.execute(text("DELETE FROM fixed_tags WHERE id = :id"), {"id": second.id})
    assert store.add_fixed_tag("alice", "three@example.net").id > second.id > first.id


def test_fixed_tag_for_an_address_goes_to_the_user_it_resolves_to(store: Store, alice: int) -> None:
    store.add_alias("as123@cam.example.ac.uk", ["alice"])
    tag = store.add_fixed_tag_for_address("AS123@cam.example.ac.uk", "list@example.net")
    assert tag.user_id == alice
    with pytest.raises(NotFound, match="not an address of a user"):
        store.add_fixed_tag_for_address("nobody@example.org", "list@example.net")


def test_revoking_an_unknown_fixed_tag_raises_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="no fixed tag with id 42"):
        store.revoke_fixed_tag(42)
    with pytest.raises(NotFound):
        store.get_fixed_tag(42)


# --- blacklist ----------------------------------------------------------------------------------


def test_blacklisted_address_is_found_in_any_case(store: Store) -> None:
    entry = store.blacklist_add(
        "alice=s1abcdefgh@example.org", "alice@example.org", "found on a web archive", START + dt.timedelta(days=7)
    )
    assert (entry.added_at, entry.expires_at) == (START, START + dt.timedelta(days=7))
    assert store.is_blacklisted("ALICE=S1ABCDEFGH@example.org")
    assert not store.is_blacklisted("alice=s1abcdefgi@example.org")


def test_blacklisting_again_keeps_the_reason_and_only_extends_the_expiry(store: Store) -> None:
    week, fortnight = START + dt.timedelta(days=7), START + dt.timedelta(days=14)
    store.blacklist_add("alice=s1x@example.org", "alice@example.org", "leaked", week)
    assert store.blacklist_add("alice=s1x@example.org", "alice@example.org", "again", START).expires_at == week
    extended = store.blacklist_add("alice=s1x@example.org", "alice@example.org", "again", fortnight)
    assert (extended.reason, extended.expires_at) == ("leaked", fortnight)
    assert len(store.blacklist_list()) == 1


def test_blacklist_purge_removes_only_entries_past_their_expiry(store: Store) -> None:
    for n, days in enumerate((1, 3, 5)):
        store.blacklist_add(f"alice=s{n}@example.org", "alice@example.org", "leaked", START + dt.timedelta(days=days))
    assert store.blacklist_purge(START + dt.timedelta(days=3)) == 1
    assert [e.signed_address for e in store.blacklist_list()] == ["alice=s1@example.org", "alice=s2@example.org"]
    assert store.blacklist_purge(START + dt.timedelta(days=3)) == 0
    assert not store.is_blacklisted("alice=s0@example.org")


def test_blacklist_times_compare_correctly_across_time_zones(store: Store) -> None:
    noon_utc_at_plus_two = dt.datetime(2026, 3, 2, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    store.blacklist_add("alice=s1@example.org", "alice@example.org", "leaked", noon_utc_at_plus_two)
    assert store.blacklist_list()[0].expires_at == dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
    assert store.blacklist_purge(dt.datetime(2026, 3, 2, 11, 59, tzinfo=dt.UTC)) == 0
    assert store.blacklist_purge(dt.datetime(2026, 3, 2, 13, 1, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == 1


def test_naive_times_are_refused(store: Store) -> None:
    with pytest.raises(InvalidValue, match="timezone-aware"):
        store.blacklist_add("a=s1@example.org", "a@example.org", "leaked", dt.datetime(2026, 3, 2))
    with pytest.raises(InvalidValue, match="timezone-aware"):
        store.blacklist_purge(dt.datetime(2026, 3, 2))


# --- events -------------------------------------------------------------------------------------


def test_events_are_listed_newest_first_and_filtered_by_user_and_time(store: Store, alice: int, clock: Clock) -> None:
    bob = store.add_user("bob", "bob@example.org").id
    store.record_event(EventKind.REJECT, "bad_mac", "alice=s1zz@example.org", user_id=alice, client="192.0.2.1")
    clock.advance(minutes=1)
    store.record_event(EventKind.WARN, "unsigned", "bob@example.org", user_id=bob, detail="testing mode")
    clock.advance(minutes=1)
    store.record_event(EventKind.DEFER, "store_unavailable", "alice@example.org", user_id=alice)
    store.record_event(EventKind.MALFORMED_BOUNCE, "no_null_sender", "nobody@example.org")

    assert [e.reason for e in store.list_events()] == ["no_null_sender", "store_unavailable", "unsigned", "bad_mac"]
    assert [e.reason for e in store.list_events(user="alice")] == ["store_unavailable", "bad_mac"]
    assert [e.reason for e in store.list_events(since=START + dt.timedelta(minutes=1))] == [
        "no_null_sender",
        "store_unavailable",
        "unsigned",
    ]
    assert len(store.list_events(limit=2)) == 2
    oldest = store.list_events()[-1]
    assert (oldest.kind, oldest.at, oldest.client, oldest.user_id) == (EventKind.REJECT, START, "192.0.2.1", alice)


def test_event_with_absurd_wire_data_is_cut_to_fit(store: Store) -> None:
    event = store.record_event(EventKind.REJECT, "malformed", "x" * 2000, client="c" * 1000)
    assert len(event.address) == 512 and event.address.endswith("...")
    assert event.client is not None and len(event.client) == 255


def test_event_for_an_unknown_user_id_is_refused_without_a_raw_database_error(store: Store) -> None:
    with pytest.raises(InvalidValue, match="no such user"):
        store.record_event(EventKind.REJECT, "bad_mac", "x@example.org", user_id=999)


def test_events_purge_deletes_only_older_events(store: Store, clock: Clock) -> None:
    store.record_event(EventKind.REJECT, "bad_mac", "x@example.org")
    clock.advance(days=30)
    store.record_event(EventKind.REJECT, "bad_mac", "y@example.org")
    assert store.events_purge(START + dt.timedelta(days=1)) == 1
    assert [e.address for e in store.list_events()] == ["y@example.org"]


def test_events_of_an_unknown_user_raise_unknown_user(store: Store) -> None:
    with pytest.raises(UnknownUser):
        store.list_events(user="nobody")


# --- the version row ----------------------------------------------------------------------------


def test_every_change_to_the_directory_moves_the_version_by_one(store: Store) -> None:
    changes: list[Callable[[], object]] = [
        lambda: store.add_user("alice", "alice@example.org"),
        lambda: store.set_mode("alice", Mode.FULL),
        lambda: store.set_password_hash("alice", "$argon2id$not-a-real-hash"),
        lambda: store.set_admin("alice", True),
        lambda: store.add_address("alice", "a.smith@example.org"),
        lambda: store.add_domain("chem.example.ac.uk"),
        lambda: store.add_alias("team@chem.example.ac.uk", ["alice"]),
        lambda: store.add_fixed_tag("alice", "list@example.net"),
        lambda: store.revoke_fixed_tag(store.list_fixed_tags()[0].id),
        lambda: store.blacklist_add("alice=s1@example.org", "alice@example.org", "leaked", START),
        lambda: store.blacklist_purge(START + dt.timedelta(seconds=1)),
    ]
    assert store.version() == 0
    for n, change in enumerate(changes, start=1):
        change()
        assert store.version() == n


def test_writes_that_change_nothing_leave_the_version(store: Store, alice: int) -> None:
    tag = store.add_fixed_tag("alice", "list@example.net")
    before = store.version()
    store.set_mode("alice", Mode.FULL)
    store.add_fixed_tag("alice", "list@example.net")
    store.blacklist_purge(START)
    store.revoke_fixed_tag(tag.id)
    assert store.version() == before + 1  # only the revocation changed something
    store.revoke_fixed_tag(tag.id)
    store.record_event(EventKind.REJECT, "bad_mac", "x@example.org")
    assert store.version() == before + 1


def test_refused_writes_leave_the_version_and_the_data(store: Store, alice: int) -> None:
    before = store.version()
    with pytest.raises(StoreError):
        store.add_user("alice", "other@example.org")
    with pytest.raises(StoreError):
        store.add_alias("x@example.org", ["alice", "nobody"])
    assert store.version() == before
    assert store.list_aliases() == []


def test_a_second_store_on_the_same_database_sees_the_version_move(store: Store, store_url: str) -> None:
    other = Store.open(store_url)
    try:
        before = other.version()
        store.add_user("alice", "alice@example.org")
        assert other.version() == before + 1
        assert other.resolve("alice@example.org").kind is ResolutionKind.USER
    finally:
        other.close()


def test_concurrent_writers_cannot_give_one_address_two_roles(store: Store, store_url: str) -> None:
    # Each writer checks the address is free and then inserts it into its own table: only the
    # store's write lock keeps two of them from both seeing it free.
    stores = [Store.open(store_url) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def claim(n: int, other: Store) -> None:
        barrier.wait()
        try:
            if n % 2:
                other.add_user(f"user{n}", "contested@example.org")
            else:
                other.add_alias("contested@example.org", ["someone@example.net"])
            outcomes.append("ok")
        except Duplicate:
            outcomes.append("duplicate")
        except Exception as exc:  # anything else (a lock timeout, a raw IntegrityError) is the failure
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=claim, args=(n, s)) for n, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for other in stores:
        other.close()
    assert sorted(outcomes) == ["duplicate"] * (len(stores) - 1) + ["ok"]


def test_postgresql_change_notifies_the_new_version(postgresql_url: str) -> None:
    Store.upgrade(postgresql_url)
    store = Store.open(postgresql_url)  # a database shared by the session: other tests may have written
    login = f"notify-{uuid.uuid4().hex[:8]}"
    dsn = make_url(postgresql_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(dsn, autocommit=True) as listener:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            before = store.version()
            store.add_user(login, f"{login}@example.org")
            store.set_mode(login, Mode.FULL)
            store.set_mode(login, Mode.FULL)  # no change: no notification
            payloads = [n.payload for n in listener.notifies(timeout=2, stop_after=3)]
    finally:
        store.close()
    assert payloads == [str(before + 1), str(before + 2)]
