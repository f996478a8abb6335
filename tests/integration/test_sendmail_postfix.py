"""`antiforgery sendmail` run as a process, a real Postfix as its upstream, smtp-sink as the next hop.

Each test runs the command as local programs do (flags, message on stdin, exit status, one line on
stderr) and reads the envelope that arrived at smtp-sink.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from components import ROOT, Postfix, SmtpSink, free_port
from service_harness import KEYRING

from gateway import keyfile
from gateway.store import Mode, Store
from signed_sender import Policy, verify

MESSAGE = b"Subject: local mail\nTo: bob@other.org\n\nHello from cron.\n"


@dataclass
class Site:
    directory: Path
    store_url: str
    upstream_port: int

    def configure(self, users: str = '"root=alice"', upstream_port: int | None = None) -> None:
        port = upstream_port or self.upstream_port
        (self.directory / "antiforgery.toml").write_text(
            f'[store]\nurl = "{self.store_url}"\n[signing]\nkey_file = "keys.toml"\n'
            f'[local]\nupstream = "127.0.0.1:{port}"\nusers = [{users}]\nhostname = "cus.example.ac.uk"\n'
        )

    def sendmail(self, *args: str, data: bytes = MESSAGE) -> subprocess.CompletedProcess[bytes]:
        command = [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())"]
        command += ["--config", str(self.directory / "antiforgery.toml"), "sendmail", *args]
        return subprocess.run(command, input=data, capture_output=True, timeout=60, cwd=ROOT, check=False)


@pytest.fixture
def site(sqlite_url: str, tmp_path: Path, postfix: Callable[..., Postfix]) -> Site:
    Store.upgrade(sqlite_url)
    store = Store.open(sqlite_url)
    try:
        store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
        store.add_user("dave", "dave@example.ac.uk", mode=Mode.OFF)
        store.add_fixed_tag("alice", "lists@other.org")
    finally:
        store.close()
    keyfile.save(tmp_path / "keys.toml", KEYRING)
    upstream = postfix(
        main_cf="smtpd_recipient_restrictions = check_recipient_access "
        "inline:{refused@other.org=REJECT, later@other.org=DEFER}, permit_mynetworks, reject_unauth_destination\n"
    )
    configured = Site(tmp_path, sqlite_url, upstream.port)
    configured.configure()
    return configured


def envelope(message: str) -> tuple[str, list[str]]:
    sender = re.search(r"^X-Mail-Args: (?:FROM:)?<([^>]*)>", message, re.MULTILINE)
    recipients = re.findall(r"^X-Rcpt-Args: (?:TO:)?<([^>]*)>", message, re.MULTILINE)
    assert sender is not None, message
    return sender[1], recipients


def body(message: str) -> str:
    """The message as the next hop got it, without smtp-sink's envelope lines and Postfix's Received."""
    lines = [line for line in message.splitlines() if not line.startswith(("X-Mail-Args", "X-Rcpt-Args"))]
    return "\n".join(lines)


def test_opted_in_users_mail_arrives_with_a_signed_envelope_sender(site: Site, smtp_sink: SmtpSink) -> None:
    result = site.sendmail("-oi", "bob@other.org")
    assert (result.returncode, result.stderr) == (0, b"")
    (message,) = smtp_sink.messages(1)
    sender, recipients = envelope(message)
    assert recipients == ["bob@other.org"]
    assert sender.startswith("alice=") and sender.endswith("@example.ac.uk")
    assert verify(sender, KEYRING, time.time(), Policy()).ok
    text = body(message)
    assert "\nFrom: root <alice@example.ac.uk>" in text  # root's GECOS name, the unsigned address
    assert "\nMessage-ID: <" in text and "\nDate: " in text and "Hello from cron." in text


def test_t_takes_recipients_from_the_header_and_removes_bcc(site: Site, smtp_sink: SmtpSink) -> None:
    data = (
        b"From: Alice <alice@example.ac.uk>\nTo: bob@other.org\nCc: Carol <carol@other.org>\n"
        b"Bcc: secret@other.org\nSubject: t\n\nbody\n.\nafter the dot\n"
    )
    result = site.sendmail("-t", "-i", data=data)
    assert (result.returncode, result.stderr) == (0, b"")
    (message,) = smtp_sink.messages(1)
    sender, recipients = envelope(message)
    assert sorted(recipients) == ["bob@other.org", "carol@other.org", "secret@other.org"]
    assert sender.startswith("alice=")
    assert "secret@other.org" not in body(message) and "Bcc" not in body(message)
    assert "\nbody\n.\nafter the dot" in body(message)  # -i: the lone dot is data, stuffed and unstuffed


def test_fixed_tag_recipient_gets_its_own_transaction_and_sender(site: Site, smtp_sink: SmtpSink) -> None:
    result = site.sendmail("-i", "bob@other.org", "lists@other.org")
    assert result.returncode == 0, result.stderr
    senders = {tuple(r): s for s, r in (envelope(m) for m in smtp_sink.messages(2))}
    assert set(senders) == {("bob@other.org",), ("lists@other.org",)}
    assert senders[("bob@other.org",)] != senders[("lists@other.org",)]
    assert all(verify(s, KEYRING, time.time(), Policy()).ok for s in senders.values())


def test_f_with_someone_elses_address_is_replaced_by_the_users_own(site: Site, smtp_sink: SmtpSink) -> None:
    result = site.sendmail("-i", "-fceo@example.ac.uk", "bob@other.org")
    assert result.returncode == 0, result.stderr
    sender, _ = envelope(smtp_sink.messages(1)[0])
    assert sender.startswith("alice=") and verify(sender, KEYRING, time.time(), Policy()).ok


def test_user_not_opted_in_is_sent_unchanged(site: Site, smtp_sink: SmtpSink) -> None:
    site.configure(users='"root=dave"')
    result = site.sendmail("-i", "-f", "dave@example.ac.uk", "-F", "Dave", "bob@other.org")
    assert result.returncode == 0, result.stderr
    (message,) = smtp_sink.messages(1)
    assert envelope(message) == ("dave@example.ac.uk", ["bob@other.org"])
    assert "\nFrom: Dave <dave@example.ac.uk>" in body(message)


def test_null_sender_stays_null(site: Site, smtp_sink: SmtpSink) -> None:
    result = site.sendmail("-i", "-f", "<>", "bob@other.org")
    assert result.returncode == 0, result.stderr
    assert envelope(smtp_sink.messages(1)[0])[0] == ""


def test_upstream_down_is_tempfail_and_nothing_is_claimed(site: Site, smtp_sink: SmtpSink) -> None:
    site.configure(upstream_port=free_port())
    result = site.sendmail("-i", "bob@other.org")
    assert result.returncode == 75
    line = result.stderr.decode()
    assert line.count("\n") == 1 and line.startswith("antiforgery sendmail: upstream 127.0.0.1:")
    assert "try again later (nothing was sent)" in line
    assert smtp_sink.messages(1, timeout=1) == []


def test_refused_recipient_stops_the_whole_message(site: Site, smtp_sink: SmtpSink) -> None:
    result = site.sendmail("-i", "bob@other.org", "lists@other.org", "refused@other.org")
    assert result.returncode == 67
    assert b"refused RCPT TO:<refused@other.org>: 554 5.7.1" in result.stderr
    assert b"(nothing was sent)" in result.stderr
    assert smtp_sink.messages(1, timeout=2) == []  # neither bob nor the fixed-tag transaction went out


def test_deferred_recipient_is_tempfail(site: Site, smtp_sink: SmtpSink) -> None:
    result = site.sendmail("-i", "bob@other.org", "later@other.org")
    assert result.returncode == 75 and b"450 4.7.1" in result.stderr
    assert smtp_sink.messages(1, timeout=2) == []


def test_unix_user_without_a_gateway_account_is_nouser(site: Site) -> None:
    site.configure(users="")
    result = site.sendmail("-i", "bob@other.org")
    assert result.returncode == 67
    assert result.stderr == (
        b"antiforgery sendmail: Unix user root (login root) has no gateway account; "
        b"the postmaster can map it to one in [local] users\n"
    )


@pytest.mark.parametrize(
    ("args", "data", "status", "words"),
    [
        ((), MESSAGE, 64, b"no recipients given"),
        (("-t",), b"Subject: none\n\nx\n", 65, b"no recipient addresses found"),
        (("-i", "bob"), MESSAGE, 67, b"'bob' is not a full address"),
        (("-bs",), b"", 64, b"mode -bs is not supported"),
    ],
)
def test_bad_invocations_exit_with_sysexits_and_one_line(
    site: Site, args: tuple[str, ...], data: bytes, status: int, words: bytes
) -> None:
    result = site.sendmail(*args, data=data)
    assert result.returncode == status and words in result.stderr and result.stderr.count(b"\n") == 1


def test_refusal_at_end_of_data_says_who_already_has_the_message(
    tmp_path: Path, sqlite_url: str, postfix: Callable[..., Postfix], smtp_sink: SmtpSink
) -> None:
    """The one case all-or-nothing cannot cover: a later transaction refused after its data."""
    Store.upgrade(sqlite_url)
    store = Store.open(sqlite_url)
    try:
        store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
        store.add_fixed_tag("alice", "lists@other.org")
    finally:
        store.close()
    keyfile.save(tmp_path / "keys.toml", KEYRING)
    # Postfix knows the recipient at the end of data when a transaction has exactly one, as both have here.
    refuse_lists = "check_recipient_access inline:{lists@other.org=REJECT}"
    upstream = postfix(main_cf=f"smtpd_end_of_data_restrictions = {refuse_lists}\n")
    site = Site(tmp_path, sqlite_url, upstream.port)
    site.configure()
    result = site.sendmail("-i", "bob@other.org", "lists@other.org")
    assert result.returncode == 65
    assert b"refused the message: 554 5.7.1" in result.stderr
    assert b"(already delivered to bob@other.org; not to the others)" in result.stderr
    assert envelope(smtp_sink.messages(1)[0])[1] == ["bob@other.org"]
