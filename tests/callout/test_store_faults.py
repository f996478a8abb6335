"""Database stopped (issue 7, "Faults"): the policy adapter defers or keeps serving, and recovers by itself.

The store is the real PostgreSQL server reached through a `db_cable.Cable` the test pulls out (the
server stopped, as its clients see it) and plugs back in (started again). Nobody restarts the
service: every recovery below is the service's own doing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from db_cable import Cable
from service_harness import KEYRING, LineClient, RunningService

from callout import policy_server
from callout.decision import Rules
from gateway.store import Mode, Store
from signed_sender import Policy

FORGED = {"request": "smtpd_access_policy", "protocol_state": "RCPT", "recipient": "x@other.org"}


def ask(client: LineClient, sender: str) -> str:
    body = {**FORGED, "sender": sender}
    client.send("".join(f"{k}={v}\n" for k, v in body.items()).encode() + b"\n")
    return str(client.read_until(b"\n\n").decode()).removeprefix("action=")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def database(postgresql_server: Any) -> Iterator[tuple[Store, Cable, str]]:
    """(a store straight to a fresh database with alice protected, a cable to the server, the URL through it)."""
    url = postgresql_server.create_database()
    Store.upgrade(url)
    direct = Store.open(url)
    direct.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    direct.add_user("bob", "bob@example.ac.uk")
    cable, through = Cable.to_postgresql(url)
    yield direct, cable, through
    cable.close()
    direct.close()
    postgresql_server.drop_database(url)


def serve(through: str) -> tuple[RunningService, LineClient]:
    store = Store.open(through, check_schema=False)
    running = RunningService(store, Rules(keyring=KEYRING, policy=Policy()))
    running.service.events.retry_seconds = 0.05
    running.service.events.retry_max_seconds = 0.2
    running.start()
    return running, LineClient(running.listen("policy", policy_server.session_factory(running.service)))


def test_database_stopped_at_start_defers_until_it_is_back(database: tuple[Store, Cable, str]) -> None:
    _, cable, through = database
    cable.cut()
    running, client = serve(through)
    try:
        assert ask(client, "alice@example.ac.uk").startswith("DEFER_IF_PERMIT 4.3.0")
        assert ask(client, "someone@other.org").startswith("DEFER_IF_PERMIT 4.3.0")  # never a guess
        cable.mend()
        wait_for(lambda: ask(client, "alice@example.ac.uk").startswith("550 5.7.1"), "the snapshot to load")
        assert ask(client, "someone@other.org") == "DUNNO"
    finally:
        client.close()
        running.stop()


def test_database_stopped_while_serving_keeps_the_answers_and_catches_up(
    database: tuple[Store, Cable, str],
) -> None:
    direct, cable, through = database
    running, client = serve(through)
    try:
        assert ask(client, "alice@example.ac.uk").startswith("550 5.7.1")
        wait_for(lambda: len(direct.list_events()) == 1, "the first event")
        cable.cut()
        for _ in range(5):  # the last snapshot answers; the events wait in memory
            assert ask(client, "alice@example.ac.uk").startswith("550 5.7.1")
        wait_for(lambda: running.service.events.failing, "an event write to fail")
        direct.set_mode("bob", Mode.FULL)  # a change the service cannot see while the cable is out
        time.sleep(0.5)
        assert ask(client, "bob@example.ac.uk") == "DUNNO"
        cable.mend()
        wait_for(lambda: ask(client, "bob@example.ac.uk").startswith("550 5.7.1"), "the change to be seen")
        wait_for(lambda: len(direct.list_events()) == 7, "the held events to be written")  # 1 + 5 + bob's 1
        wait_for(lambda: running.service.events.held == 0, "the writer to finish")
        assert len(direct.list_events()) == 7
    finally:
        client.close()
        running.stop()


def test_an_outage_is_logged_when_it_starts_and_when_it_ends_not_every_second(
    database: tuple[Store, Cable, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, cable, through = database
    running, client = serve(through)
    running.service.directory.refresh_seconds = 0.05
    try:
        caplog.set_level("WARNING", logger="antiforgery.directory")
        cable.cut()
        time.sleep(1.0)  # about twenty failed refreshes
        cable.mend()
        wait_for(lambda: "store reachable again" in caplog.text, "the recovery to be logged")
        unreachable = [r for r in caplog.records if r.getMessage().startswith("store unreachable")]
        assert len(unreachable) == 1, caplog.text
    finally:
        client.close()
        running.stop()
