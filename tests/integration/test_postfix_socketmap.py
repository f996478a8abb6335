"""The socketmap maps in real Postfix, configured with the deploy files as shipped (ports and paths replaced).

deploy/postfix/submission-socketmap-master.cf and -main.cf: Postfix's own submission (STARTTLS,
SASL through a private Dovecot) signs the envelope sender in its own cleanup and leaves From:
alone; a login may only send as its own addresses. deploy/postfix/verification-socketmap-main.cf:
the public smtpd rejects a forged sender, passes a signed one, and prepends the warning for a
testing-mode user.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import smtplib
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from components import DOVECOT_BINARY, Dovecot, Postfix, SmtpSink, free_port, require_component
from service_harness import KEYRING, RunningService

from callout import milter_server, policy_server, socketmap_server
from callout.decision import Rules
from gateway.store import Mode, Store
from gateway.submission.tls import make_self_signed
from signed_sender import Policy, Reason, sign, verify

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "postfix"
MASTER = DEPLOY / "submission-socketmap-master.cf"
MAIN = DEPLOY / "submission-socketmap-main.cf"
VERIFY = DEPLOY / "verification-socketmap-main.cf"
VERIFICATION = DEPLOY / "verification-main.cf"
PASSWORD = "submission password"
StartPostfix = Callable[..., Postfix]


@dataclass
class Site:
    """What a site has before it adds our lines: a SASL service, a certificate, the sender-login map."""

    main_cf: str
    login_map: Path


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """One Dovecot, certificate and login map for the module (a Dovecot takes seconds to stop)."""
    if not DOVECOT_BINARY.exists():
        require_component("Dovecot", f"{DOVECOT_BINARY} is missing (Debian package dovecot-core)")
    if os.geteuid() != 0:
        require_component("Dovecot", "the tests start dovecot as root (it drops to its own users)")
    root = Path(tempfile.mkdtemp(prefix="antiforgery-submission-"))
    root.chmod(0o755)  # Dovecot's and Postfix's own users read from here
    (root / "dovecot").mkdir(mode=0o755)
    auth = Dovecot(root / "dovecot", {login: f"{{PLAIN}}{PASSWORD}" for login in ("alice", "bob", "carol")})
    try:
        auth.start()
        cert, key = root / "tls.crt", root / "tls.key"
        make_self_signed(cert, key, "mx.example.ac.uk", dt.datetime.now(dt.UTC))
        login_map = root / "antiforgery-sender-logins"
        login_map.write_text("alice@example.ac.uk alice\nbob@example.ac.uk bob\ncarol@example.ac.uk carol\n")
        postmap_config = root / "postmap"  # postmap wants a main.cf; Postfix's own defaults do
        postmap_config.mkdir()
        (postmap_config / "main.cf").write_text("")
        command = ["postmap", "-c", str(postmap_config), f"hash:{login_map}"]
        subprocess.run(command, check=True, capture_output=True, timeout=30)
        main_cf = f"smtpd_sasl_type = dovecot\nsmtpd_sasl_path = inet:127.0.0.1:{auth.port}\n"
        main_cf += f"smtpd_tls_chain_files = {key}, {cert}\n"
        yield Site(main_cf, login_map)
    finally:
        auth.stop()
        shutil.rmtree(root, ignore_errors=True)


def configured(site: Site, map_port: int, submission_port: int) -> tuple[str, str]:
    """master.cf and main.cf lines: the shipped ones, on the test's ports and paths."""
    master = MASTER.read_text().replace("127.0.0.1:10041", f"127.0.0.1:{map_port}")
    master = re.sub(r"^submission inet", f"127.0.0.1:{submission_port} inet", master, flags=re.MULTILINE)
    main = MAIN.read_text().replace("/etc/postfix/antiforgery-sender-logins", str(site.login_map))
    main += VERIFY.read_text().replace("127.0.0.1:10041", f"127.0.0.1:{map_port}")
    return master, site.main_cf + main


@pytest.fixture
def mta(store: Store, site: Site, request: pytest.FixtureRequest) -> tuple[Postfix, int]:
    """Postfix with the shipped lines; returns it and its submission port.

    The directory is written before the service starts, and Postfix started after it, so that
    Postfix (which keeps its socketmap connections open) is stopped first.
    """
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    store.add_user("carol", "carol@example.ac.uk", mode=Mode.TESTING)
    running: RunningService = request.getfixturevalue("running_service")
    postfix: StartPostfix = request.getfixturevalue("postfix")
    map_port = running.listen("socketmap", socketmap_server.session_factory(running.service))
    submission_port = free_port()
    master, main = configured(site, map_port, submission_port)
    return postfix(main_cf=main, master_cf=master), submission_port


def message(sender: str, recipient: str) -> str:
    return f"From: Alice <{sender}>\r\nTo: {recipient}\r\nSubject: test\r\n\r\nhello\r\n"


def send(port: int, sender: str, recipient: str = "bob@other.org") -> None:
    """Relay through a public smtpd, as a remote MTA does: no TLS, no AUTH."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail(sender, [recipient], message(sender, recipient))


def submit(port: int, login: str, sender: str, recipient: str = "bob@other.org") -> None:
    """Submit as a mail client does: STARTTLS, then AUTH, then the message."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.login(login, PASSWORD)
        smtp.sendmail(sender, [recipient], message(sender, recipient))


def envelope_sender(message: str) -> str:
    match = re.search(r"^X-Mail-Args: (?:FROM:)?<([^>]*)>", message, re.MULTILINE)
    assert match, message
    return match[1]


def test_submission_cleanup_signs_the_envelope_sender_only(mta: tuple[Postfix, int], smtp_sink: SmtpSink) -> None:
    postfix, submission = mta
    submit(submission, "alice", "alice@example.ac.uk")
    message = smtp_sink.messages(1)[0]
    signed = envelope_sender(message)
    assert signed != "alice@example.ac.uk", postfix.log()
    assert verify(signed, KEYRING, time.time()).reason is Reason.VALID
    assert "From: Alice <alice@example.ac.uk>" in message  # sender_canonical_classes = envelope_sender


def test_submission_needs_tls_and_auth_and_refuses_a_sender_the_login_does_not_own(mta: tuple[Postfix, int]) -> None:
    postfix, submission = mta
    with smtplib.SMTP("127.0.0.1", submission, timeout=30) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("auth")  # smtpd_tls_auth_only: no AUTH before STARTTLS
        code, text = smtp.mail("alice@example.ac.uk")
        assert code == 530 and b"STARTTLS" in text, (code, text)  # smtpd_tls_security_level = encrypt
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        submit(submission, "bob", "alice@example.ac.uk")  # the map would sign it: the login check comes first
    code, text = refused.value.recipients["bob@other.org"]
    assert code == 553 and b"not owned by user bob" in text, (code, text, postfix.log())


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


def test_own_submission_beside_verification_main_cf_is_signed_and_not_judged_unsigned(
    store: Store, site: Site, request: pytest.FixtureRequest, smtp_sink: SmtpSink
) -> None:
    """The policy and milter of verification-main.cf would see the sender before cleanup signs it."""
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    running: RunningService = request.getfixturevalue("running_service")
    postfix: StartPostfix = request.getfixturevalue("postfix")
    service = running.service
    map_port = running.listen("socketmap", socketmap_server.session_factory(service))
    policy = running.listen("policy", policy_server.session_factory(service, "mx.example.ac.uk"))
    milter = running.listen("milter", milter_server.session_factory(service, "mx.example.ac.uk"))
    submission = free_port()
    master, main = configured(site, map_port, submission)
    verification = VERIFICATION.read_text().replace("127.0.0.1:10040", f"127.0.0.1:{policy}")
    mta = postfix(main_cf=main + verification.replace("127.0.0.1:10043", f"127.0.0.1:{milter}"), master_cf=master)
    submit(submission, "alice", "alice@example.ac.uk")
    message = smtp_sink.messages(1)[0]
    assert verify(envelope_sender(message), KEYRING, time.time()).ok, mta.log()
    assert "Authentication-Results" not in message and "X-Antiforgery-Warning" not in message
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(mta.port, "alice@example.ac.uk")  # while the public smtpd still refuses the forgery


@pytest.fixture
def unreachable() -> Iterator[RunningService]:
    """A service whose store was unreachable at start: no directory, so every answer is TEMP."""
    store = Store.open("postgresql+psycopg://nobody@127.0.0.1:1/none", check_schema=False)  # nothing listens
    running = RunningService(store, Rules(keyring=KEYRING, policy=Policy())).start()
    yield running
    running.stop()


def test_without_a_directory_or_the_service_postfix_defers_both_submission_and_relay(
    unreachable: RunningService, site: Site, request: pytest.FixtureRequest
) -> None:
    postfix: StartPostfix = request.getfixturevalue("postfix")  # after the service: stopped before it
    map_port = unreachable.listen("socketmap", socketmap_server.session_factory(unreachable.service))
    submission_port = free_port()
    master, main = configured(site, map_port, submission_port)
    mta = postfix(main_cf=main, master_cf=master)
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        submit(submission_port, "alice", "alice@example.ac.uk")
    assert 400 <= deferred.value.smtp_code < 500, deferred.value  # cleanup's lookup failed: never sent unsigned
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(mta.port, "alice@example.ac.uk")
    code, text = refused.value.recipients["bob@other.org"]
    assert code == 450 and b"forgery check temporarily unavailable" in text, text  # Postfix's defer_if_permit_code
    assert text.startswith(b"4.3.0 <alice@example.ac.uk>: Sender address rejected:")
    # Nothing listening on the map's port at all: the same 4xx at the end of data.
    submission_port = free_port()
    master, main = configured(site, free_port(), submission_port)
    postfix(main_cf=main, master_cf=master)
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        submit(submission_port, "alice", "alice@example.ac.uk")
    assert 400 <= deferred.value.smtp_code < 500, deferred.value
