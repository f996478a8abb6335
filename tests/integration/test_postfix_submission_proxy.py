"""The submission proxy in front of a real Postfix configured with deploy/postfix/submission-proxy-master.cf.

swaks submits over TLS with AUTH to the proxy, which signs and relays to the loopback listener of
the snippet; main.cf is deploy/postfix/verification-main.cf, so the verification policy and the
Authentication-Results milter are live, as on a real gateway. The next hop is smtp-sink, or a
greylisting sink that defers every first attempt.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from components import Postfix, SmtpSink, free_port, require_component
from greylist_sink import GreylistSink
from proxy_harness import PASSWORD, RunningProxy
from service_harness import KEYRING, RunningService

from callout import milter_server, policy_server
from gateway.store import Store
from signed_sender import TagKind, verify

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "postfix"
LISTENER = DEPLOY / "submission-proxy-master.cf"
VERIFICATION = DEPLOY / "verification-main.cf"
StartPostfix = Callable[..., Postfix]
StartProxy = Callable[..., RunningProxy]

#: Site settings a gateway may well have, which must not touch what the proxy signed.
SITE_MAIN_CF = """
mynetworks = 192.0.2.0/24
canonical_maps = inline:{ alice@example.ac.uk=alice.liddell@example.ac.uk }
"""
#: Postfix retries a deferred message after seconds, not after minutes (the test only). Not after
#: one second: qmgr takes a deferred file whose time stamp is at most a second ahead, and if the
#: smtp client that deferred it has not yet let go of its lock, qmgr logs "skipped, still being
#: delivered" and puts the message aside for a minute.
FAST_RETRY = "minimal_backoff_time = 3s\nmaximal_backoff_time = 3s\nqueue_run_delay = 1s\n"


@dataclass
class Gateway:
    proxy: RunningProxy
    postfix: Postfix
    listener: int  # the snippet's loopback port, [submission] upstream


@pytest.fixture
def proxy_store(sqlite_url: str, service: RunningService) -> Iterator[Store]:
    store = Store.open(sqlite_url)
    yield store
    store.close()


def start_gateway(
    service: RunningService, proxy_store: Store, request: pytest.FixtureRequest, extra_main_cf: str = ""
) -> Gateway:
    """Postfix with the two deploy files on the test's ports, and the proxy relaying to its listener.

    Postfix is started after the service, so that it is stopped first (it keeps the policy and
    milter connections open).
    """
    postfix: StartPostfix = request.getfixturevalue("postfix")
    start_proxy: StartProxy = request.getfixturevalue("start_proxy")
    policy = service.listen("policy", policy_server.session_factory(service.service, "mx.example.ac.uk"))
    milter = service.listen("milter", milter_server.session_factory(service.service, "mx.example.ac.uk"))
    listener = free_port()
    main_cf = VERIFICATION.read_text().replace("127.0.0.1:10040", f"127.0.0.1:{policy}")
    main_cf = main_cf.replace("127.0.0.1:10043", f"127.0.0.1:{milter}")
    master_cf = LISTENER.read_text().replace("127.0.0.1:10025", f"127.0.0.1:{listener}")
    master_cf = master_cf.replace("127.0.0.1:10040", f"127.0.0.1:{policy}")
    mta = postfix(main_cf=main_cf + SITE_MAIN_CF + extra_main_cf, master_cf=master_cf)
    return Gateway(start_proxy(proxy_store, listener), mta, listener)


@pytest.fixture
def gateway(service: RunningService, proxy_store: Store, request: pytest.FixtureRequest) -> Gateway:
    return start_gateway(service, proxy_store, request)


def swaks(port: int, login: str, sender: str, recipient: str, *headers: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("swaks") is None:
        require_component("swaks", "the tests submit with it as a mail client does (Debian package swaks)")
    command = ["swaks", "--server", f"127.0.0.1:{port}", "--tls", "--auth", "PLAIN"]
    command += ["--auth-user", login, "--auth-password", PASSWORD, "--from", sender, "--to", recipient]
    command += ["--helo", "laptop.example.org", "--timeout", "30"]
    for header in headers:
        command += ["--add-header", header]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def submitted(result: subprocess.CompletedProcess[str]) -> bool:
    """Whether the proxy answered 250 to the end of data (Postfix queued the message)."""
    return re.search(r"^ ~> \.\n<~  250 ", result.stdout, re.MULTILINE) is not None


def envelope_sender(message: str) -> str:
    match = re.search(r"^X-Mail-Args: <([^>]*)>", message, re.MULTILINE)
    assert match, message
    return match[1]


def test_opted_in_user_arrives_signed_and_not_opted_in_unchanged(gateway: Gateway, smtp_sink: SmtpSink) -> None:
    forged = "Authentication-Results: mx.example.ac.uk; x-signed-sender=pass smtp.mailfrom=ceo@example.ac.uk"
    alice = swaks(gateway.proxy.port, "alice", "alice@example.ac.uk", "bob@other.org", forged)
    assert submitted(alice), alice.stdout + gateway.postfix.log()
    bob = swaks(gateway.proxy.port, "bob", "bob@example.ac.uk", "carol@other.org")
    assert submitted(bob), bob.stdout + gateway.postfix.log()
    messages = {envelope_sender(m).partition("=")[0].partition("@")[0]: m for m in smtp_sink.messages(2)}
    assert set(messages) == {"alice", "bob"}, gateway.postfix.log()
    signed = envelope_sender(messages["alice"])
    verdict = verify(signed, KEYRING, time.time())
    assert verdict.ok and verdict.kind is TagKind.ENVELOPE and verdict.address == "alice@example.ac.uk", signed
    assert envelope_sender(messages["bob"]) == "bob@example.ac.uk"
    # The site's canonical_maps rewrite neither the signed sender nor the From: header (DKIM).
    assert "\nFrom: alice@example.ac.uk" in messages["alice"] and "liddell" not in messages["alice"]
    # The milter removed the user's copy of our header and added its own verdict on the signed sender.
    assert "ceo@example.ac.uk" not in messages["alice"]
    assert f"Authentication-Results: mx.example.ac.uk; x-signed-sender=pass smtp.mailfrom={signed}" in messages["alice"]
    assert "postfix/antiforgery/smtpd" in gateway.postfix.log()  # the snippet's listener took them


def test_a_forgery_sent_straight_to_the_loopback_listener_is_refused(gateway: Gateway) -> None:
    """Any local process can connect to the listener: the policy refuses an unsigned protected sender."""
    with smtplib.SMTP("127.0.0.1", gateway.listener, timeout=30) as client:
        client.ehlo("cron.example.ac.uk")
        assert client.mail("alice@example.ac.uk")[0] == 250
        code, text = client.rcpt("bob@other.org")
    assert code == 550 and b"alice@example.ac.uk is protected against forgery" in text, text


def test_greylisted_first_attempt_and_its_retry_carry_the_same_signed_sender(
    service: RunningService, proxy_store: Store, request: pytest.FixtureRequest
) -> None:
    sink = GreylistSink()
    request.addfinalizer(sink.stop)  # registered first: stopped after Postfix
    relay = f"relayhost = [127.0.0.1]:{sink.port}\n"
    gateway = start_gateway(service, proxy_store, request, relay + FAST_RETRY)
    result = swaks(gateway.proxy.port, "alice", "alice@example.ac.uk", "bob@other.org")
    assert submitted(result), result.stdout + gateway.postfix.log()
    attempts = sink.wait_delivered(1)
    assert [(a.recipients[0][1], a.data is not None) for a in attempts] == [(451, False), (250, True)], (
        f"{attempts}\n{gateway.postfix.log()}"
    )
    first, retry = attempts
    assert first.mail == retry.mail and first.mail.startswith(b"MAIL FROM:<alice=s"), attempts
    signed = first.mail.split(b"<", 1)[1].split(b">", 1)[0].decode()
    assert verify(signed, KEYRING, time.time()).ok
    log = gateway.postfix.log()
    assert log.count("status=deferred") == 1 and log.count("status=sent") == 1, log
