"""The SMTP callout responder over a real socket, smtplib as the remote MTA, a real service and store."""

from __future__ import annotations

import asyncio
import io
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from service_harness import KEYRING, RunningService

from callout.callout_responder import MAX_REPLY_LINE, CalloutHandler, Limits, reply_for
from callout.decision import Action, Decision
from callout.serve import run
from callout.service import VerificationService
from gateway.cli import main as cli_main
from gateway.config import load
from gateway.store import Mode
from signed_sender import sign

Start = Callable[..., int]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def start_responder(running_service: RunningService) -> Start:
    """Start a responder on a free loopback port on the service's own loop; returns the port."""
    store = running_service.store
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    store.add_user("carol", "carol@example.ac.uk", mode=Mode.TESTING)
    store.add_user("bob", "bob@example.ac.uk")
    running_service.call(running_service.service.refresh())

    def start(
        limits: Limits | None = None,
        service: VerificationService | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> int:
        handler = CalloutHandler(
            service or running_service.service, limits, hostname="callout.example.ac.uk", clock=clock
        )
        server = running_service.call(handler.listen("127.0.0.1", 0))
        running_service.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    return start


@pytest.fixture
def port(start_responder: Start) -> int:
    return start_responder()


@pytest.fixture
def smtp(port: int) -> Iterator[smtplib.SMTP]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="mx.remote.test", timeout=5) as client:
        client.ehlo()
        yield client


def callout(smtp: smtplib.SMTP, address: str, sender: str = "") -> tuple[int, str]:
    assert smtp.mail(sender)[0] == 250
    code, text = smtp.rcpt(address)
    smtp.rset()
    return code, text.decode()


def test_callout_for_a_bounce_to_a_signed_address_gets_250(smtp: smtplib.SMTP) -> None:
    code, _ = callout(smtp, sign("alice@example.ac.uk", KEYRING, time.time()))
    assert code == 250


def test_callout_for_a_bounce_to_an_unsigned_protected_address_gets_550_5_7_1(smtp: smtplib.SMTP) -> None:
    code, text = callout(smtp, "alice@example.ac.uk")
    assert code == 550
    assert text.startswith("5.7.1 bounce to alice@example.ac.uk refused") and "collateral spam" in text


def test_callout_for_a_forged_tag_gets_550_with_the_reason(smtp: smtplib.SMTP) -> None:
    code, text = callout(smtp, "alice=sapfsgh3ijfh34zz@example.ac.uk")
    assert code == 550 and text.startswith("5.7.1 ")


def test_callouts_are_not_refused_in_testing_mode(smtp: smtplib.SMTP) -> None:
    assert callout(smtp, "carol@example.ac.uk")[0] == 250


def test_unprotected_and_unknown_addresses_get_250(smtp: smtplib.SMTP) -> None:
    for address in ("bob@example.ac.uk", "nobody@example.ac.uk", "someone@other.org"):
        assert callout(smtp, address)[0] == 250, address


def test_with_a_real_sender_the_sender_is_checked_not_the_recipient(smtp: smtplib.SMTP) -> None:
    code, text = callout(smtp, "someone@other.org", sender="alice@example.ac.uk")
    assert code == 550 and "alice@example.ac.uk is protected against forgery" in text
    assert callout(smtp, "alice@example.ac.uk", sender="someone@other.org")[0] == 250


def test_postfix_probe_sender_is_checked_like_a_bounce(smtp: smtplib.SMTP) -> None:
    assert callout(smtp, "alice@example.ac.uk", sender="double-bounce@mx.remote.test")[0] == 550


def test_exim_use_postmaster_callout_is_checked_like_a_bounce(smtp: smtplib.SMTP) -> None:
    assert callout(smtp, "alice@example.ac.uk", sender="postmaster@mx.remote.test")[0] == 550
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    assert callout(smtp, signed, sender="Postmaster@mx.remote.test")[0] == 250


def test_postfix_probe_sender_with_a_time_stamp_is_checked_like_a_bounce(smtp: smtplib.SMTP) -> None:
    # address_verify_sender_ttl: Postfix appends a base-31 stamp to the local part, no delimiter.
    assert callout(smtp, "alice@example.ac.uk", sender="double-bounceJQZ3@mx.remote.test")[0] == 550
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    assert callout(smtp, signed, sender="double-bounce4bx@mx.remote.test")[0] == 250
    # Not a stamp (a vowel, a hyphen): an ordinary sender, checked itself, the recipient not.
    assert callout(smtp, "alice@example.ac.uk", sender="double-bounce-admin@mx.remote.test")[0] == 250


def test_exims_random_local_part_is_refused_so_that_callout_random_checks_each_address(smtp: smtplib.SMTP) -> None:
    # Accepted, it would tell Exim's `callout=random` that the domain takes anything.
    code, text = callout(smtp, "mx.remote.test-1790000000-testing@example.ac.uk")
    assert code == 550 and text.startswith("5.1.1 <mx.remote.test-1790000000-testing@example.ac.uk>: no such user")
    assert callout(smtp, "release-2024-testing@example.ac.uk")[0] == 250  # not Exim's pattern


def test_data_after_an_accepted_rcpt_gets_354_and_the_message_is_refused_at_its_end(smtp: smtplib.SMTP) -> None:
    assert smtp.mail("")[0] == 250
    assert smtp.rcpt("bob@example.ac.uk")[0] == 250
    code, text = smtp.data(b"Subject: misrouted\r\n\r\n" + b"x" * 200_000 + b"\r\n.leading dot\r\n")
    assert code == 554 and text.decode().startswith("5.3.2 This host only answers address verification callouts")
    assert smtp.noop()[0] == 250  # back in command mode
    assert smtp.docmd("RCPT TO:<bob@example.ac.uk>")[0] == 503  # the transaction is over: MAIL first


def test_a_probe_that_hangs_up_after_354_is_answered_as_postfix_expects(port: int) -> None:
    """Postfix's smtp_address_verify_target = data: 354 means deliverable, then it disconnects."""
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        smtp.ehlo("mx.remote.test")
        assert smtp.mail("double-bounce@mx.remote.test")[0] == 250
        assert smtp.rcpt(sign("alice@example.ac.uk", KEYRING, time.time()))[0] == 250
        assert smtp.docmd("DATA")[0] == 354
        smtp.close()
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:  # the responder carries on
        smtp.ehlo("mx.remote.test")
        assert callout(smtp, "alice@example.ac.uk")[0] == 550


def test_data_without_an_accepted_rcpt_is_refused_before_354(smtp: smtplib.SMTP) -> None:
    assert smtp.mail("")[0] == 250
    assert smtp.rcpt("alice@example.ac.uk")[0] == 550
    assert smtp.docmd("DATA") == (554, b"5.5.1 No valid recipients")
    assert smtp.noop()[0] == 250  # no 354 was sent, so the session is still in command mode


def test_null_recipient_is_a_syntax_error(smtp: smtplib.SMTP) -> None:
    assert smtp.mail("")[0] == 250
    assert smtp.docmd("RCPT TO:<>")[0] == 501


def test_ehlo_offers_neither_auth_nor_starttls_and_auth_is_not_implemented(smtp: smtplib.SMTP) -> None:
    assert not smtp.has_extn("auth") and not smtp.has_extn("starttls")
    assert smtp.docmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==")[0] == 502


def test_greeting_names_the_host_and_its_purpose(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        greeting = sock.recv(512).decode()
    assert greeting.startswith("220 callout.example.ac.uk ") and "callouts only" in greeting


def test_callout_defers_with_451_when_the_directory_was_never_loaded(
    start_responder: Start, running_service: RunningService
) -> None:
    cold = VerificationService(running_service.store, running_service.rules)  # never started: no snapshot
    with smtplib.SMTP("127.0.0.1", start_responder(service=cold), timeout=5) as smtp:
        smtp.ehlo()
        code, text = callout(smtp, "alice@example.ac.uk")
    assert code == 451 and text.startswith("4.3.0 forgery check temporarily unavailable")


def test_rcpt_beyond_the_rate_gets_450_without_a_decision_until_tokens_refill(start_responder: Start) -> None:
    clock = FakeClock()
    port = start_responder(Limits(rate=0.01, burst=2), clock=clock)
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        smtp.ehlo()
        assert callout(smtp, "bob@example.ac.uk")[0] == 250
        assert callout(smtp, "bob@example.ac.uk")[0] == 250
        code, text = callout(smtp, "alice@example.ac.uk")  # would be 550: no answer leaks
        assert code == 450 and text.startswith("4.7.1 Too many verification requests from 127.0.0.1")
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:  # a new session does not reset the bucket
        smtp.ehlo()
        assert callout(smtp, "alice@example.ac.uk")[0] == 450
        clock.now += 100.0  # one token back
        assert callout(smtp, "alice@example.ac.uk")[0] == 550
        assert callout(smtp, "alice@example.ac.uk")[0] == 450


def test_too_many_recipients_in_one_session_get_452_even_after_rset(start_responder: Start) -> None:
    port = start_responder(Limits(max_recipients=2))
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        smtp.ehlo()
        assert [callout(smtp, "bob@example.ac.uk")[0] for _ in range(3)] == [250, 250, 452]
        assert smtp.docmd("RCPT TO:<bob@example.ac.uk>")[0] == 503  # RSET happened: MAIL first
    with smtplib.SMTP("127.0.0.1", port, timeout=5) as smtp:
        smtp.ehlo()
        assert callout(smtp, "bob@example.ac.uk")[0] == 250


def test_a_client_over_its_session_limit_gets_421_at_the_greeting(start_responder: Start) -> None:
    port = start_responder(Limits(max_sessions=1))
    first = smtplib.SMTP("127.0.0.1", port, timeout=5)
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP("127.0.0.1", port, timeout=5)
    assert refused.value.smtp_code == 421 and b"4.7.0" in refused.value.smtp_error
    first.quit()
    deadline = time.monotonic() + 5
    while True:  # the server counts the session closed once it has seen the connection end
        try:
            smtplib.SMTP("127.0.0.1", port, timeout=5).quit()
            break
        except smtplib.SMTPConnectError:
            assert time.monotonic() < deadline, "session count never went down"
            time.sleep(0.05)


def test_a_session_is_closed_with_421_when_its_time_is_up(start_responder: Start) -> None:
    port = start_responder(Limits(session_seconds=0.3))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    greeting, _, rest = received.partition(b"\r\n")
    assert greeting.startswith(b"220 ") and rest.startswith(b"421 4.4.2 ")


def test_reply_lines_are_cut_to_the_rfc_5321_limit() -> None:
    decision = Decision(Action.REJECT, "bad_mac", "x" * 1000, 550, "5.7.1")
    assert len(reply_for(decision, "a@b.c")) == MAX_REPLY_LINE
    accept = Decision(Action.WARN, "bad_mac", "failed", header="X-Antiforgery-Warning: failed")
    assert reply_for(accept, "a@b.c") == "250 2.1.5 <a@b.c> OK"


def test_reply_lines_are_printable_ascii_whatever_the_address_or_the_text() -> None:
    # aiosmtpd hands over <"a\rb"@b.c> with its CR; a bare CR in a reply is not SMTP (RFC 5321 2.3.8).
    assert reply_for(Decision(Action.ACCEPT, "not_protected", "x"), "a\rb@b.c") == "250 2.1.5 <a?b@b.c> OK"
    defer = Decision(Action.DEFER, "callout_unavailable", "(451 später)", 451, "4.4.3")
    assert reply_for(defer, "a@b.c") == "451 4.4.3 (451 sp?ter)"


def test_serve_starts_the_responder_on_callout_listen(tmp_path: Path) -> None:
    config_path = tmp_path / "antiforgery.toml"
    assert cli_main(["--config", str(config_path), "init", "--domain", "example.ac.uk"], out=io.StringIO()) == 0
    add_alice = ["user", "add", "alice", "--address", "alice@example.ac.uk", "--mode", "full"]
    assert cli_main(["--config", str(config_path), *add_alice], out=io.StringIO()) == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    others = ("policy", "socketmap", "readsocket", "http", "milter", "metrics")
    off = "".join(f'{name}_listen = ""\n' for name in others)
    with config_path.open("a") as file:
        file.write(f'\n[verification]\n{off}callout_listen = "127.0.0.1:{port}"\ncallout_hostname = "mx.test"\n')
    config = load(config_path)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, args=(run(config, stop),), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                smtp = smtplib.SMTP("127.0.0.1", port, timeout=5)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and thread.is_alive(), "the responder never listened"
                time.sleep(0.05)
        with smtp:
            smtp.ehlo("mx.remote.test")
            assert callout(smtp, "alice@example.ac.uk")[0] == 550
            assert callout(smtp, "bob@example.ac.uk")[0] == 250
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
