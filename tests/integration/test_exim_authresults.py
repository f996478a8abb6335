"""Authentication-Results through real Exim: the deploy/ DATA ACL strips forged copies and adds ours."""

from __future__ import annotations

import re
import time
from pathlib import Path

from components import Exim
from service_harness import KEYRING, RunningService

from callout import readsocket_server
from gateway.store import Mode
from signed_sender import sign

SNIPPET = Path(__file__).resolve().parents[2] / "deploy" / "exim" / "authentication-results.conf"


def exim_config(port: int) -> str:
    acl = SNIPPET.read_text().replace("127.0.0.1:10042", f"127.0.0.1:{port}")
    return f"""
domainlist local_domains = example.ac.uk
acl_smtp_rcpt = acl_check_rcpt
acl_smtp_data = acl_check_data
begin acl
acl_check_rcpt:
  accept
{acl}
"""


def submit(exim: Exim, config: str, sender: str, recipient: str, headers: list[str]) -> str:
    body = "\r\n".join([*headers, "Subject: test", "", "hello", "."])
    dialogue = f"HELO client.other.org\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nDATA\r\n{body}\r\nQUIT\r\n"
    output = exim.run(["-bs", "-oMa", "192.0.2.7"], input=dialogue, config_text=config).stdout
    queued = re.search(r"250 OK id=(\S+)", output)
    assert queued, output
    headers_shown = exim.run(["-Mvh", queued[1]], config_text=config).stdout
    # -Mvh marks removed headers with '*' after the length; keep the live ones.
    return headers_shown


def live_ar(spool_headers: str) -> list[str]:
    live = []
    for line in spool_headers.splitlines():
        match = re.match(r"^\d{3}(.) (Authentication-Results:.*)$", line)
        if match and match[1] != "*":
            live.append(match[2])
    return live


def test_exim_strips_forged_copies_and_adds_our_verdict(exim: Exim, running_service: RunningService) -> None:
    running_service.store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    running_service.call(running_service.service.refresh())
    port = running_service.listen("readsocket", readsocket_server.session_factory(running_service.service, "mx.test"))
    config = exim_config(port)
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    shown = submit(
        exim,
        config,
        signed,
        "bob@other.org",
        ["Authentication-Results: mx.test; x-signed-sender=pass smtp.mailfrom=forged@example.ac.uk"],
    )
    assert live_ar(shown) == [f"Authentication-Results: mx.test; x-signed-sender=pass smtp.mailfrom={signed}"]
    assert "forged@example.ac.uk" not in "\n".join(live_ar(shown))


def test_exim_bounce_verdict_names_the_recipient(exim: Exim, running_service: RunningService) -> None:
    running_service.store.add_user("alice", "alice@example.ac.uk", mode=Mode.TESTING)
    running_service.call(running_service.service.refresh())
    port = running_service.listen("readsocket", readsocket_server.session_factory(running_service.service, "mx.test"))
    shown = submit(exim, exim_config(port), "", "alice@example.ac.uk", [])
    assert live_ar(shown) == ["Authentication-Results: mx.test; x-signed-sender=fail smtp.rcptto=alice@example.ac.uk"]


def test_exim_without_the_service_adds_nothing_and_still_strips(exim: Exim) -> None:
    shown = submit(exim, exim_config(1), "bob@other.org", "x@example.ac.uk", ["Authentication-Results: mx.test; none"])
    assert live_ar(shown) == []
