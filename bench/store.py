"""A large store for the benchmarks, built fast and kept between runs.

Issue 7 asks for a store of 1,000,000 users and 10,000,000 blacklisted tags. Adding them through the
`Store` API (one locked, version-bumping transaction per row) would take hours, so the schema comes
from the real migrations and the rows go in with SQLAlchemy Core `insert()` executemany, untyped
columns with pre-formatted values (no per-row type processing), journalling off. The result is kept
in `.cache/bench/`, one file per size, with its own key file; an interrupted build leaves only a
`.partial` file, which the next run throws away.

The blacklisted tags are tag-shaped but not genuine (their MACs are made up): they only have to
occupy the blacklist. `add_leaked` adds a few genuinely signed, blacklisted tags at run time, so that
requests can hit the blacklist.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import column, create_engine, insert, table, text

from gateway import keyfile, passwords
from gateway.store import Store, head_revision
from signed_sender import Keyring, Policy, sign

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench"
DOMAIN = "example.ac.uk"
BATCH = 50_000
#: Bumped when the generated rows change, so that an older cached store is not reused.
GENERATION = 2
#: SQLAlchemy's text format for DateTime on SQLite (naive UTC, see gateway.store.models.UTCDateTime).
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"
_B32 = "abcdefghijklmnopqrstuvwxyz234567"

users_table = table(
    "users",
    column("id"),
    column("login"),
    column("primary_address"),
    column("mode"),
    column("is_admin"),
    column("created_at"),
    column("updated_at"),
)
blacklist_table = table(
    "blacklist",
    column("id"),
    column("signed_address"),
    column("base_address"),
    column("reason"),
    column("added_at"),
    column("expires_at"),
)
domains_table = table("domains", column("name"), column("description"))


@dataclass(frozen=True)
class BenchStore:
    path: Path
    key_file: Path
    users: int
    blacklisted: int
    build_seconds: float  # 0.0 when reused from the cache

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def keyring(self) -> Keyring:
        return keyfile.load(self.key_file)


def login(i: int) -> str:
    return f"u{i}"


def address(i: int) -> str:
    return f"u{i}@{DOMAIN}"


def mode(i: int) -> str:
    """5% off, 5% testing, 90% full: most users of a site that turned protection on."""
    return "off" if i % 20 == 0 else "testing" if i % 20 == 1 else "full"


def _fake_tag(i: int) -> str:
    """`s` `a` and 14 base32 characters: the shape of a timed tag of key 0; ascending with i."""
    digits = "".join(_B32[(i >> (5 * k)) & 31] for k in reversed(range(14)))
    return "sa" + digits


def _leaks_in_index_order(users: int, blacklisted: int) -> Iterator[tuple[int, str]]:
    """(owner, signed address) for every leak, in the order of the unique index on signed_address.

    Rows that arrive in index order append to the B-tree instead of landing at random pages:
    the build takes a fraction of the time. Owners are visited in the order of `u<n>=` as text.
    """
    per_owner, extra = divmod(blacklisted, users)
    owners = sorted(range(users), key=lambda n: f"u{n}=")
    serial = 0
    for owner in owners:
        for _ in range(per_owner + (1 if owner < extra else 0)):
            yield owner, f"u{owner}={_fake_tag(serial)}@{DOMAIN}"
            serial += 1


Row = dict[str, object]


def _batches(count: int, row: Callable[[int], Row]) -> Iterator[list[Row]]:
    for start in range(0, count, BATCH):
        yield [row(i) for i in range(start, min(count, start + BATCH))]


def _build(path: Path, users: int, blacklisted: int) -> None:
    Store.upgrade(f"sqlite:///{path}")
    engine = create_engine(f"sqlite:///{path}")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    created = now.strftime(SQLITE_TIME)
    # Far in the future: the cache is reused for years of runs, and expired rows are not loaded.
    expires = (now + dt.timedelta(days=3650)).strftime(SQLITE_TIME)
    with engine.begin() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode = OFF")
        connection.exec_driver_sql("PRAGMA synchronous = OFF")
        connection.execute(insert(domains_table), [{"name": DOMAIN, "description": "bench"}])

        def user(i: int) -> Row:
            return {
                "id": i + 1,
                "login": login(i),
                "primary_address": address(i),
                "mode": mode(i),
                "is_admin": 0,
                "created_at": created,
                "updated_at": created,
            }

        for rows in _batches(users, user):
            connection.execute(insert(users_table), rows)

        batch: list[Row] = []
        for owner, signed in _leaks_in_index_order(users, blacklisted):
            batch.append(
                {
                    "signed_address": signed,
                    "base_address": address(owner),
                    "reason": "",
                    "added_at": created,
                    "expires_at": expires,
                }
            )
            if len(batch) == BATCH:
                connection.execute(insert(blacklist_table), batch)
                batch = []
        if batch:
            connection.execute(insert(blacklist_table), batch)
        connection.execute(text("UPDATE store_meta SET version = version + 1 WHERE id = 1"))
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA journal_mode = WAL")
    engine.dispose()


def bench_store(users: int, blacklisted: int, say: Callable[[str], None] = print) -> BenchStore:
    """The cached store of this size, built first if there is none."""
    CACHE.mkdir(parents=True, exist_ok=True)
    # Keyed by the schema revision too: the service refuses a store at another revision.
    path = CACHE / f"store-u{users}-b{blacklisted}-r{head_revision()}-g{GENERATION}.sqlite3"
    key_file = CACHE / f"keys-u{users}-b{blacklisted}.toml"
    if not key_file.exists():
        keyfile.create(key_file, int(time.time()))
    if path.exists():
        return BenchStore(path, key_file, users, blacklisted, 0.0)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    say(f"building {path.name}: {users} users, {blacklisted} blacklisted tags (kept for later runs)")
    started = time.perf_counter()
    _build(partial, users, blacklisted)
    os.replace(partial, path)
    return BenchStore(path, key_file, users, blacklisted, time.perf_counter() - started)


def add_leaked(store: BenchStore, indices: list[int], now: float, policy: Policy) -> list[str]:
    """Sign these users' addresses now and blacklist the results; returns the signed addresses.

    Written with plain SQL before the service starts, so the service loads them with the rest and
    no version change makes it reload during a measurement.
    """
    keyring = store.keyring()
    signed = [sign(address(i), keyring, now, policy) for i in indices]
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).replace(tzinfo=None)
    engine = create_engine(store.url)
    with engine.begin() as connection:
        for i, leaked in zip(indices, signed, strict=True):
            connection.execute(
                text(
                    "INSERT OR IGNORE INTO blacklist (signed_address, base_address, reason, added_at, expires_at)"
                    " VALUES (:s, :b, 'bench', :a, :e)"
                ),
                {
                    "s": leaked.lower(),
                    "b": address(i),
                    "a": stamp.strftime(SQLITE_TIME),
                    "e": (stamp + dt.timedelta(days=8)).strftime(SQLITE_TIME),
                },
            )
    engine.dispose()
    return signed


def clear_events(store: BenchStore) -> None:
    """Forget the events earlier runs recorded (refusals of benchmark requests), so the file stays small."""
    engine = create_engine(store.url)
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM events"))
    engine.dispose()


def set_password(store: BenchStore, indices: list[int], password: str) -> None:
    """Give these users a password for SMTP AUTH (one Argon2id hash with the service's parameters)."""
    hashed = passwords.hash_password(password)
    engine = create_engine(store.url)
    with engine.begin() as connection:
        update = text("UPDATE users SET password_hash = :h WHERE login = :l")
        for i in indices:
            connection.execute(update, {"h": hashed, "l": login(i)})
    engine.dispose()
