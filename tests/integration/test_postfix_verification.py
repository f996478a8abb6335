"""Verification on a real Postfix configured with deploy/postfix/verification-main.cf, driven by swaks."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from components import Postfix, SmtpSink
from service_harness import KEYRING, RunningService

from callout import milter_server, policy_server
from gateway.store import Mode
from signed_sender import sign

SNIPPET = Path(__file__).resolve().parents[2] / "deploy" / "postfix" / "verification-main.cf"
StartPostfix = Callable[..., Postfix]


def swaks(port: int, sender: str, recipient: str) -> subprocess.CompletedProcess[str]:
    command = ["swaks", "--server", f"127.0.0.1:{port}", "--from", sender, "--to", recipient, "--timeout", "30"]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def rcpt_reply(result: subprocess.CompletedProcess[str]) -> str:
    """The server's reply to RCPT TO, as swaks shows it."""
    lines = result.stdout.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(" -> RCPT TO"))
    return next(line for line in lines[index + 1 :] if line.startswith(("<-", "<**")))


@pytest.fixture
def mx(running_service: RunningService, postfix: StartPostfix) -> Postfix:
    store = running_service.store
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    store.add_user("carol", "carol@example.ac.uk", mode=Mode.TESTING)
    store.add_user("bob", "bob@example.ac.uk")
    running_service.call(running_service.service.refresh())
    service = running_service.service
    policy = running_service.listen("policy", policy_server.session_factory(service, "mx.example.ac.uk"))
    milter = running_service.listen("milter", milter_server.session_factory(service, "mx.example.ac.uk"))
    main_cf = SNIPPET.read_text().replace("127.0.0.1:10040", f"127.0.0.1:{policy}")
    main_cf = main_cf.replace("127.0.0.1:10043", f"127.0.0.1:{milter}")
    # The test clients connect from loopback: take it out of mynetworks so it is "outside".
    return postfix(main_cf=main_cf + "mynetworks = 192.0.2.0/24\n")


def test_forged_sender_claiming_an_opted_in_user_is_refused_at_rcpt(mx: Postfix) -> None:
    reply = rcpt_reply(swaks(mx.port, "alice@example.ac.uk", "someone@other.org"))
    assert reply.startswith("<** 550 5.7.1") and "alice@example.ac.uk is protected against forgery" in reply


def test_signed_sender_is_relayed_unchanged(mx: Postfix, smtp_sink: SmtpSink) -> None:
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    assert "250 2.0.0 Ok: queued" in swaks(mx.port, signed, "someone@other.org").stdout
    message = smtp_sink.messages(1)[0]
    assert f"X-Mail-Args: <{signed}>" in message
    assert "x-signed-sender=pass" in message


def test_bounces_to_unsigned_or_expired_addresses_are_refused_and_to_signed_accepted(mx: Postfix) -> None:
    expired = sign("alice@example.ac.uk", KEYRING, time.time() - 9 * 86400)
    unsigned = rcpt_reply(swaks(mx.port, "<>", "alice@example.ac.uk"))
    assert unsigned.startswith("<** 550 5.7.1") and "bounce to alice@example.ac.uk refused" in unsigned
    assert rcpt_reply(swaks(mx.port, "<>", expired)).startswith("<** 550 5.7.1")
    fresh = sign("alice@example.ac.uk", KEYRING, time.time())
    assert rcpt_reply(swaks(mx.port, "<>", fresh)).startswith("<-  250")


def test_not_opted_in_is_unchanged_and_testing_mode_gets_the_warning(mx: Postfix, smtp_sink: SmtpSink) -> None:
    assert "queued" in swaks(mx.port, "bob@example.ac.uk", "someone@other.org").stdout
    assert "queued" in swaks(mx.port, "carol@example.ac.uk", "someone@other.org").stdout
    first, second = smtp_sink.messages(2)
    by_sender = {m.split("X-Mail-Args: <", 1)[1].split(">", 1)[0]: m for m in (first, second)}
    assert "X-Antiforgery-Warning" not in by_sender["bob@example.ac.uk"]
    assert (
        "X-Antiforgery-Warning: sender carol@example.ac.uk failed the forgery check (unsigned)"
        in by_sender["carol@example.ac.uk"]
    )


def test_service_down_means_mail_waits(postfix: StartPostfix) -> None:
    main_cf = SNIPPET.read_text().replace("127.0.0.1:10040", "127.0.0.1:1").replace("127.0.0.1:10043", "127.0.0.1:1")
    mta = postfix(main_cf=main_cf + "mynetworks = 192.0.2.0/24\n")
    assert rcpt_reply(swaks(mta.port, "alice@example.ac.uk", "someone@other.org")).startswith("<** 450 4.")
