"""The socketmap maps in real Postfix, configured with the lines the module docstring gives.

Submission's own cleanup signs the envelope sender (and leaves From: alone); the public smtpd
rejects a forged sender, passes a signed one, and prepends the warning for a testing-mode user.
"""

from __future__ import annotations

import re
import smtplib
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import Postfix, SmtpSink, free_port
from service_harness import KEYRING, RunningService

from callout import socketmap_server
from callout.decision import Rules
from gateway.store import Mode, Store
from signed_sender import Policy, Reason, sign, verify

StartPostfix = Callable[..., Postfix]


def documented_blocks() -> tuple[str, str]:
    """The master.cf and main.cf blocks of the module docstring, in that order."""
    doc = socketmap_server.__doc__ or ""
    blocks = [textwrap.dedent(part.lstrip("\n").split("\n\n", 1)[0]) + "\n" for part in doc.split("::\n")[1:]]
    return blocks[0], blocks[1]


def configured(map_port: int, submission_port: int) -> tuple[str, str]:
    """master.cf and main.cf lines: the documented ones, on the test's ports."""
    master, main = (block.replace("10041", str(map_port)) for block in documented_blocks())
    master = master.replace("submission inet n - y", f"127.0.0.1:{submission_port} inet n - n")
    master = re.sub(r"^(cleanup-submission unix n - )y", r"\1n", master, flags=re.MULTILINE)
    # The test submits from loopback without SASL: let mynetworks stand in for authentication.
    return master, main + "mua_sender_restrictions = permit_mynetworks, reject\n"


@pytest.fixture
def mta(store: Store, request: pytest.FixtureRequest) -> tuple[Postfix, int]:
    """Postfix with the documented lines; returns it and its submission port.

    The directory is written before the service starts, and Postfix started after it, so that
    Postfix (which keeps its socketmap connections open) is stopped first.
    """
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    store.add_user("carol", "carol@example.ac.uk", mode=Mode.TESTING)
    running: RunningService = request.getfixturevalue("running_service")
    postfix: StartPostfix = request.getfixturevalue("postfix")
    map_port = running.listen("socketmap", socketmap_server.session_factory(running.service))
    submission_port = free_port()
    master, main = configured(map_port, submission_port)
    return postfix(main_cf=main, master_cf=master), submission_port


def send(port: int, sender: str, recipient: str = "bob@other.org") -> None:
    message = f"From: Alice <{sender}>\r\nTo: {recipient}\r\nSubject: test\r\n\r\nhello\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail(sender, [recipient], message)


def envelope_sender(message: str) -> str:
    match = re.search(r"^X-Mail-Args: (?:FROM:)?<([^>]*)>", message, re.MULTILINE)
    assert match, message
    return match[1]


def test_submission_cleanup_signs_the_envelope_sender_only(mta: tuple[Postfix, int], smtp_sink: SmtpSink) -> None:
    postfix, submission = mta
    send(submission, "alice@example.ac.uk")
    message = smtp_sink.messages(1)[0]
    signed = envelope_sender(message)
    assert signed != "alice@example.ac.uk", postfix.log()
    assert verify(signed, KEYRING, time.time()).reason is Reason.VALID
    assert "From: Alice <alice@example.ac.uk>" in message  # sender_canonical_classes = envelope_sender


def test_public_smtpd_rejects_forged_and_passes_signed_senders(mta: tuple[Postfix, int], smtp_sink: SmtpSink) -> None:
    postfix, _ = mta
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(postfix.port, "alice@example.ac.uk")
    code, text = refused.value.recipients["bob@other.org"]
    assert code == 550
    assert text.decode().startswith("5.7.1 <alice@example.ac.uk>: Sender address rejected: alice@example.ac.uk is")
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    send(postfix.port, signed)
    assert envelope_sender(smtp_sink.messages(1)[0]) == signed  # relayed mail is not signed again


def test_public_smtpd_prepends_the_warning_for_a_testing_mode_sender(
    mta: tuple[Postfix, int], smtp_sink: SmtpSink
) -> None:
    postfix, _ = mta
    send(postfix.port, "carol@example.ac.uk")
    message = smtp_sink.messages(1)[0]
    assert "X-Antiforgery-Warning: sender carol@example.ac.uk failed the forgery check (unsigned)" in message
    assert envelope_sender(message) == "carol@example.ac.uk"


@pytest.fixture
def unreachable() -> Iterator[RunningService]:
    """A service whose store was unreachable at start: no directory, so every answer is TEMP."""
    store = Store.open("postgresql+psycopg://nobody@127.0.0.1:1/none", check_schema=False)  # nothing listens
    running = RunningService(store, Rules(keyring=KEYRING, policy=Policy())).start()
    yield running
    running.stop()


def test_without_a_directory_postfix_defers_both_submission_and_relay(
    unreachable: RunningService, request: pytest.FixtureRequest
) -> None:
    postfix: StartPostfix = request.getfixturevalue("postfix")  # after the service: stopped before it
    map_port = unreachable.listen("socketmap", socketmap_server.session_factory(unreachable.service))
    submission_port = free_port()
    master, main = configured(map_port, submission_port)
    mta = postfix(main_cf=main, master_cf=master)
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        send(submission_port, "alice@example.ac.uk")
    assert 400 <= deferred.value.smtp_code < 500, deferred.value  # cleanup's lookup failed: never sent unsigned
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(mta.port, "alice@example.ac.uk")
    code, text = refused.value.recipients["bob@other.org"]
    assert code == 450 and b"forgery check temporarily unavailable" in text, text  # Postfix's defer_if_permit_code
    assert text.startswith(b"4.3.0 <alice@example.ac.uk>: Sender address rejected:")
