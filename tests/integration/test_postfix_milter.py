"""Authentication-Results through real Postfix: foreign copies of ours removed, our verdict added."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from components import Postfix, SmtpSink
from service_harness import KEYRING, RunningService

from callout import milter_server
from gateway.store import Mode
from signed_sender import sign

StartPostfix = Callable[..., Postfix]


def swaks(port: int, sender: str, recipient: str, *headers: str) -> str:
    command = ["swaks", "--server", f"127.0.0.1:{port}", "--from", sender, "--to", recipient]
    for header in headers:
        command += ["--add-header", header]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    return result.stdout


def ar_headers(message: str) -> list[str]:
    head = message.split("\n\n", 1)[0]
    return [line for line in head.splitlines() if line.lower().startswith("authentication-results:")]


def test_milter_strips_forged_verdicts_and_adds_ours(
    running_service: RunningService, postfix: StartPostfix, smtp_sink: SmtpSink
) -> None:
    running_service.store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    running_service.call(running_service.service.refresh())
    port = running_service.listen("milter", milter_server.session_factory(running_service.service, "mx.example.ac.uk"))
    mta = postfix(main_cf=f"smtpd_milters = inet:127.0.0.1:{port}\nmilter_default_action = tempfail\n")
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    out = swaks(
        mta.port,
        signed,
        "bob@other.org",
        "Authentication-Results: mx.example.ac.uk; x-signed-sender=pass smtp.mailfrom=forged@example.ac.uk",
        "Authentication-Results: mx.other.org; spf=pass smtp.mailfrom=x@other.org",
        "Authentication-Results: MX.EXAMPLE.AC.UK; x-signed-sender=pass",
    )
    assert "250 2.0.0 Ok: queued" in out, out + mta.log()
    message = smtp_sink.messages(1)[0]
    headers = ar_headers(message)
    assert headers[0] == f"Authentication-Results: mx.example.ac.uk; x-signed-sender=pass smtp.mailfrom={signed}"
    assert headers[1:] == ["Authentication-Results: mx.other.org; spf=pass smtp.mailfrom=x@other.org"]
    assert "forged@example.ac.uk" not in message


def test_milter_verdict_for_a_bounce_and_an_unprotected_sender(
    running_service: RunningService, postfix: StartPostfix, smtp_sink: SmtpSink
) -> None:
    running_service.store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    running_service.call(running_service.service.refresh())
    port = running_service.listen("milter", milter_server.session_factory(running_service.service, "mx.example.ac.uk"))
    mta = postfix(main_cf=f"smtpd_milters = inet:127.0.0.1:{port}\n")
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    assert "queued" in swaks(mta.port, "<>", signed)
    assert "queued" in swaks(mta.port, "bob@other.org", "alice@example.ac.uk")
    first, second = (ar_headers(m) for m in smtp_sink.messages(2))
    verdicts = sorted([first[0], second[0]])
    assert verdicts == [
        "Authentication-Results: mx.example.ac.uk; x-signed-sender=none smtp.mailfrom=bob@other.org",
        f"Authentication-Results: mx.example.ac.uk; x-signed-sender=pass smtp.rcptto={signed}",
    ]
