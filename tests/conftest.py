"""Fixtures for tests against real components: Exim, PostgreSQL and SQLite.

Real daemons and binaries, never mocks. `scripts/setup-system` installs them. Where one is missing,
a test that needs it is skipped on a developer's machine and fails under CI=true, so CI cannot turn
green by skipping what it was meant to check.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from components import (
    DOVECOT_BINARY,
    EXIM_BINARY,
    EXIM_USER,
    POSTFIX_BINARY,
    ROOT,
    SMTP_SINK,
    Dovecot,
    Exim,
    EximError,
    Postfix,
    SmtpSink,
    require_component,
)
from proxy_harness import RunningProxy
from service_harness import KEYRING, RunningService

from callout.decision import Rules
from gateway.store import Store
from signed_sender import Policy

# Tried in order; the first that answers is used to create and drop the test databases.
POSTGRESQL_ADMIN_URLS = (
    "postgresql+psycopg://postgres@/postgres?host=/var/run/postgresql",  # trust auth (CI machines)
    "postgresql+psycopg://root@/postgres?host=/var/run/postgresql",  # Debian's peer auth, as root
    "postgresql+psycopg://postgres@127.0.0.1/postgres",
)


@pytest.fixture(name="require_component")
def _require_component_fixture() -> Callable[[str, str], NoReturn]:
    """The same helper as a fixture, for test modules that take it as a fixture."""
    return require_component


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the components they use, so `-m "not exim and not postgresql"` runs without them."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        callspec = getattr(item, "callspec", None)
        if "exim" in names:
            item.add_marker(pytest.mark.exim)
        uses_pg_store = callspec is not None and callspec.params.get("store_url") == "postgresql"
        if "postgresql_url" in names or uses_pg_store:
            item.add_marker(pytest.mark.postgresql)


# --- Exim ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def exim() -> Iterator[Exim]:
    if not EXIM_BINARY.is_file():
        require_component("Exim", f"{EXIM_BINARY.relative_to(ROOT)} not found")
    if os.geteuid() != 0:
        require_component("Exim", "the tests run `exim4 -C` as root, and this is not root")
    try:
        account = pwd.getpwnam(EXIM_USER)
    except KeyError:
        require_component("Exim", f"system user {EXIM_USER} does not exist")
    # Exim drops to its own user to receive messages, so it must be able to reach the spool and log:
    # a world-traversable directory under /tmp, not pytest's root-only tmp_path.
    workdir = Path(tempfile.mkdtemp(prefix="antiforgery-exim-"))
    workdir.chmod(0o755)
    try:
        instance = Exim(EXIM_BINARY, workdir)
        for directory in (instance.spool_directory, instance.log_directory):
            directory.mkdir(mode=0o750)
            os.chown(directory, account.pw_uid, account.pw_gid)
        try:
            instance.run(["-bV"])
        except (EximError, OSError) as error:
            require_component("Exim", f"{EXIM_BINARY} does not run: {error}")
        yield instance
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- Databases -------------------------------------------------------------------------------------


class PostgreSQLServer:
    """An administrative connection to the local server that creates and drops test databases."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy import create_engine

        self.admin_url = admin_url
        self.engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})

    def create_database(self) -> str:
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        name = f"antiforgery_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with self.engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        from sqlalchemy import text
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        with self.engine.connect() as connection:
            # FORCE: a test that leaked a connection must not leave its database behind.
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgreSQLServer]:
    try:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError as error:
        require_component("PostgreSQL", f"SQLAlchemy is not installed ({error})")
    candidates = [os.environ["ANTIFORGERY_TEST_PG_ADMIN_URL"]] if "ANTIFORGERY_TEST_PG_ADMIN_URL" in os.environ else []
    errors = []
    for url in [*candidates, *POSTGRESQL_ADMIN_URLS]:
        try:
            server = PostgreSQLServer(url)
            with server.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, ImportError) as error:
            errors.append(f"{url}: {str(getattr(error, 'orig', None) or error).splitlines()[0]}")
            continue
        try:
            yield server
        finally:
            server.engine.dispose()
        return
    require_component("PostgreSQL", "no local server answered (" + "; ".join(errors) + ")")


@pytest.fixture(scope="session")
def postgresql_url(postgresql_server: PostgreSQLServer) -> Iterator[str]:
    """SQLAlchemy URL of a fresh database that lives for the whole test session."""
    url = postgresql_server.create_database()
    try:
        yield url
    finally:
        postgresql_server.drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy URL of a new SQLite file, one per test."""
    return f"sqlite:///{tmp_path / 'store.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """An empty store database on each backend, one per test, so store tests run on both."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_url")
        return
    server: PostgreSQLServer = request.getfixturevalue("postgresql_server")
    url = server.create_database()
    try:
        yield url
    finally:
        server.drop_database(url)


# --- Postfix and smtp-sink ----------------------------------------------------------------------


@pytest.fixture
def mail_dir() -> Iterator[Path]:
    """A directory the postfix user can traverse (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="antiforgery-mail-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def smtp_sink(mail_dir: Path) -> Iterator[SmtpSink]:
    if not SMTP_SINK.exists():
        require_component("smtp-sink", f"{SMTP_SINK} is missing (Debian package postfix)")
    sink = SmtpSink(mail_dir / "sink")
    yield sink
    sink.stop()


@pytest.fixture
def postfix(mail_dir: Path, smtp_sink: SmtpSink) -> Iterator[Callable[..., Postfix]]:
    """Start private Postfix instances relaying to `smtp_sink`: `postfix(main_cf="...")`."""
    if not POSTFIX_BINARY.exists():
        require_component("Postfix", f"{POSTFIX_BINARY} is missing (Debian package postfix)")
    started: list[Postfix] = []

    def start(main_cf: str = "", master_cf: str = "") -> Postfix:
        instance = Postfix(mail_dir / f"postfix{len(started)}", smtp_sink.port, main_cf, master_cf).start()
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


# --- the verification service on a real store ------------------------------------------------------


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    Store.upgrade(store_url)
    opened = Store.open(store_url)
    yield opened
    opened.close()


@pytest.fixture
def running_service(store_url: str) -> Iterator[RunningService]:
    """Service on a fresh store (SQLite and PostgreSQL); add users through `.store` first or after."""
    Store.upgrade(store_url)
    running = RunningService(Store.open(store_url), Rules(keyring=KEYRING, policy=Policy()))
    running.start()
    yield running
    running.stop()


# --- Dovecot ---------------------------------------------------------------------------------------


@pytest.fixture
def dovecot() -> Iterator[Callable[..., Dovecot]]:
    """Start private Dovecot auth services: `dovecot(users={"alice": "{PLAIN}secret"}, passdb=...)`."""
    if not DOVECOT_BINARY.exists():
        require_component("Dovecot", f"{DOVECOT_BINARY} is missing (Debian package dovecot-core)")
    if os.geteuid() != 0:
        require_component("Dovecot", "the tests start dovecot as root (it drops to its own users)")
    started: list[Dovecot] = []
    # Dovecot's auth processes run as the dovecot user: a world-traversable directory, not tmp_path.
    root = Path(tempfile.mkdtemp(prefix="antiforgery-dovecot-"))
    root.chmod(0o755)

    def start(users: dict[str, str] | None = None, passdb: str = "") -> Dovecot:
        directory = root / f"dovecot{len(started)}"
        directory.mkdir(mode=0o755)
        instance = Dovecot(directory, users or {}, passdb)
        started.append(instance)
        return instance.start()

    try:
        yield start
    finally:
        for instance in started:
            instance.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- the submission proxy -----------------------------------------------------------------------


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    """For tests of the SMTP dialogue itself, where the database backend makes no difference."""
    Store.upgrade(sqlite_url)
    opened = Store.open(sqlite_url)
    yield opened
    opened.close()


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[Callable[..., RunningProxy]]:
    """`start_proxy(store, upstream_port, **handler_options)`; every proxy started is stopped."""
    started: list[RunningProxy] = []

    def start(store: Store, upstream_port: int, **options: Any) -> RunningProxy:
        started.append(RunningProxy(store, upstream_port, tmp_path, **options))
        return started[-1]

    yield start
    for proxy in started:
        proxy.stop()
