"""The service around the core: NOTIFY-driven refresh, metrics, and the `check` command."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from service_harness import KEYRING, RunningService

from callout.decision import Action, Rules
from gateway.cli import main
from gateway.store import Mode, Store
from signed_sender import Policy


def test_postgresql_notify_wakes_the_refresh_long_before_the_poll(postgresql_url: str) -> None:
    Store.upgrade(postgresql_url)
    running = RunningService(Store.open(postgresql_url), Rules(keyring=KEYRING, policy=Policy()), refresh_seconds=60)
    running.start()
    try:
        time.sleep(0.5)  # let LISTEN connect
        writer = Store.open(postgresql_url)
        writer.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
        changed = time.time()
        while running.service.snapshot is None or "alice@example.ac.uk" not in running.service.snapshot.owners:
            assert time.time() - changed < 2.0, "NOTIFY did not wake the refresh within 2 seconds"
            time.sleep(0.02)
        writer.close()
    finally:
        running.stop()


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_decisions_are_counted_per_adapter_action_and_reason(running_service: RunningService) -> None:
    running_service.store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    running_service.call(running_service.service.refresh())
    service = running_service.service
    labels = {"adapter": "test", "action": "reject", "reason": "unsigned"}
    before = counter("antiforgery_decisions_total", **labels)
    latency_before = counter("antiforgery_decision_seconds_count", adapter="test")
    decision = service.decide(service.request("alice@example.ac.uk", "x@y.org"), "test")
    assert decision.action is Action.REJECT
    assert counter("antiforgery_decisions_total", **labels) == before + 1
    assert counter("antiforgery_decision_seconds_count", adapter="test") == latency_before + 1


@pytest.fixture
def site(tmp_path: Path) -> Path:
    config = tmp_path / "antiforgery.toml"
    assert main(["--config", str(config), "init", "--domain", "example.ac.uk"], out=io.StringIO()) == 0
    assert (
        main(
            ["--config", str(config), "user", "add", "alice", "--address", "alice@example.ac.uk", "--mode", "full"],
            out=io.StringIO(),
        )
        == 0
    )
    return config


def check(config: Path, *args: str) -> str:
    out = io.StringIO()
    assert main(["--config", str(config), "check", *args], out=out) == 0
    return out.getvalue()


def test_check_prints_the_decision_first_word_first(site: Path) -> None:
    assert check(site, "--sender", "alice@example.ac.uk", "--recipient", "x@other.org").startswith("reject unsigned:")
    assert check(site, "--sender", "", "--recipient", "alice@example.ac.uk").startswith("reject unsigned: bounce to")
    assert check(site, "--sender", "bob@other.org", "--recipient", "alice@example.ac.uk").startswith("accept")


def test_check_at_a_given_time_sees_expiry(site: Path) -> None:
    out = io.StringIO()
    main(["--config", str(site), "sign", "alice@example.ac.uk", "--at", "1790000000"], out=out)
    signed = out.getvalue().strip()
    assert check(site, "--sender", signed, "--at", "1790000000").startswith("accept valid")
    assert check(site, "--sender", signed, "--at", str(1790000000 + 8 * 86400)).startswith("reject expired")


def test_check_in_testing_mode_shows_the_header(site: Path) -> None:
    main(["--config", str(site), "user", "mode", "alice", "testing"], out=io.StringIO())
    lines = check(site, "--sender", "alice@example.ac.uk").splitlines()
    assert lines[0].startswith("warn unsigned") and lines[1].startswith("X-Antiforgery-Warning:")
