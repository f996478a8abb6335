"""The Exim readsocket line protocol: its parser without a socket, the server over one, and real Exim."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from adapter_support import unreachable_service
from service_harness import KEYRING, LineClient, RunningService

from callout import readsocket_server
from callout.readsocket_server import MAX_LINE, AuthRes, LineParser, RequestError, Sign, Verify, parse_request
from gateway.store import Mode, Store
from signed_sender import Reason, sign, verify

# --- the parser, sans I/O ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"verify alice@example.ac.uk x@y.org", Verify("alice@example.ac.uk", "x@y.org")),
        (b"verify <> alice@example.ac.uk", Verify("", "alice@example.ac.uk")),
        (b"verify  alice@example.ac.uk", Verify("", "alice@example.ac.uk")),  # Exim's empty $sender_address
        (b"VERIFY <alice@example.ac.uk> <x@y.org>", Verify("alice@example.ac.uk", "x@y.org")),
        (b"verify alice@example.ac.uk", Verify("alice@example.ac.uk", "")),
        (b"sign alice@example.ac.uk", Sign("alice@example.ac.uk")),
        # RFC 5321 quoted local parts may hold spaces: Exim's $sender_address keeps the quotes,
        # its $local_part@$domain does not, so the recipient is the rest of the line.
        (b'verify "alice=x y"@example.ac.uk x@y.org', Verify('"alice=x y"@example.ac.uk', "x@y.org")),
        (b'verify <"a\\" b"@x.org> r@y.org', Verify('"a\\" b"@x.org', "r@y.org")),
        (b"verify  alice=x y@example.ac.uk", Verify("", "alice=x y@example.ac.uk")),
        (b'authres "a b"@x.org c d@y.org', AuthRes('"a b"@x.org', "c d@y.org")),
    ],
)
def test_requests_are_parsed_into_commands(line: bytes, expected: Verify | Sign | AuthRes) -> None:
    assert parse_request(line) == expected


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"", "empty request"),
        (b"hello there", "unknown command"),
        (b"verify", "malformed request"),
        (b"sign", "malformed request"),
        (b"sign <>", "malformed request"),
        (b"sign a@b c@d", "malformed request"),
    ],
)
def test_bad_requests_are_errors(line: bytes, error: str) -> None:
    with pytest.raises(RequestError, match=error):
        parse_request(line)


def test_lines_end_at_lf_lose_their_cr_and_the_last_one_ends_at_eof() -> None:
    parser = LineParser()
    assert parser.feed(b"verify a@b c@d\r\nsign a") == [b"verify a@b c@d"]
    assert parser.feed(b"@b\n\nverify x@y") == [b"sign a@b", b""]
    assert parser.finish() == [b"verify x@y"]
    assert parser.finish() == []


def test_a_line_over_the_limit_stops_the_parser() -> None:
    parser = LineParser()
    assert parser.feed(b"x" * (MAX_LINE - 1) + b"\n") == [b"x" * (MAX_LINE - 1)]
    assert parser.feed(b"sign a@b\n" + b"y" * MAX_LINE) == [b"sign a@b"]
    assert parser.too_long and parser.feed(b"sign a@b\n") == [] and parser.finish() == []


# --- the server over a socket --------------------------------------------------------------------


@pytest.fixture
def port(store: Store, request: pytest.FixtureRequest) -> int:
    """The directory first, then the service: its first load sees it all, and no refresh woken by
    a NOTIFY of one of these writes can race (and outlive) an explicit one."""
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    store.add_user("carol", "carol@example.ac.uk", mode=Mode.TESTING)
    store.add_user("bob", "bob@example.ac.uk")
    running_service: RunningService = request.getfixturevalue("running_service")
    return running_service.listen("readsocket", readsocket_server.session_factory(running_service.service))


@pytest.fixture
def client(port: int) -> Iterator[LineClient]:
    connection = LineClient(port)
    yield connection
    connection.close()


def ask(client: LineClient, line: str) -> str:
    client.send(line.encode() + b"\n")
    return client.read_until(b"\n").decode()


def test_forged_sender_is_rejected_with_code_enhanced_code_and_text(client: LineClient) -> None:
    assert ask(client, "verify alice@example.ac.uk x@other.org").startswith(
        "reject 550 5.7.1 alice@example.ac.uk is protected against forgery"
    )


def test_signed_and_unprotected_senders_are_accepted(client: LineClient) -> None:
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    assert ask(client, f"verify {signed} x@other.org") == "accept"
    assert ask(client, "verify bob@example.ac.uk x@other.org") == "accept"
    assert ask(client, "verify someone@other.org alice@example.ac.uk") == "accept"  # recipient not checked


def test_bounce_recipient_is_checked_for_the_null_sender(client: LineClient) -> None:
    assert ask(client, "verify <> alice@example.ac.uk").startswith("reject 550 5.7.1 bounce to alice@example.ac.uk")
    assert ask(client, "verify  alice@example.ac.uk").startswith("reject 550 5.7.1 bounce to")
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    assert ask(client, f"verify <> {signed}") == "accept"


def test_testing_mode_warns_with_the_header_line(client: LineClient) -> None:
    assert ask(client, "verify carol@example.ac.uk x@other.org") == (
        "warn X-Antiforgery-Warning: sender carol@example.ac.uk failed the forgery check (unsigned)"
    )


def test_sign_gives_the_signed_address_or_a_dash(client: LineClient) -> None:
    signed = ask(client, "sign alice@example.ac.uk")
    assert verify(signed, KEYRING, time.time()).reason is Reason.VALID
    assert ask(client, "sign carol@example.ac.uk").startswith("carol=")
    assert ask(client, f"sign {signed}") == "-"
    assert ask(client, "sign bob@example.ac.uk") == "-"
    assert ask(client, "sign @example.ac.uk") == "-"


def test_bad_requests_get_one_error_line_each(client: LineClient) -> None:
    assert ask(client, "frobnicate alice@example.ac.uk") == "error unknown command"
    assert ask(client, "") == "error empty request"
    assert ask(client, "verify") == "error malformed request"
    assert ask(client, "verify bob@example.ac.uk x@y.org") == "accept"  # the connection goes on


def test_several_requests_on_one_connection_are_answered_in_order(client: LineClient) -> None:
    client.send(b"verify alice@example.ac.uk x@y.org\r\nsign bob@example.ac.uk\nverify <> bob@example.ac.uk\n")
    assert client.read_until(b"\n").startswith(b"reject 550 ")
    assert client.read_until(b"\n") == b"-"
    assert client.read_until(b"\n") == b"accept"


def test_a_last_line_without_lf_is_answered_after_the_client_shuts_down_its_side(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"verify bob@example.ac.uk x@y.org\nverify alice@example.ac.uk x@y.org")
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    first, second, rest = received.split(b"\n", 2)
    assert first == b"accept" and second.startswith(b"reject 550 5.7.1 ") and rest == b""


def test_an_overlong_line_is_refused_and_the_connection_closed(client: LineClient) -> None:
    client.send(b"verify " + b"a" * MAX_LINE + b"@example.ac.uk x@y.org\n")
    assert client.read_until(b"\n") == b"error line too long"
    assert client.closed_by_server()


def test_unloaded_directory_defers_verify_and_sign() -> None:
    running = unreachable_service()
    try:
        client = LineClient(running.listen("readsocket", readsocket_server.session_factory(running.service)))
        assert ask(client, "verify alice@example.ac.uk x@y.org").startswith("defer forgery check temporarily")
        assert ask(client, "sign alice@example.ac.uk").startswith("defer ")
        client.close()
    finally:
        running.stop()


# --- real Exim -----------------------------------------------------------------------------------


def readsocket(port: int, request: str, eol: str = "\\n") -> str:
    return f"${{readsocket{{inet:127.0.0.1:{port}}}{{{request}}}{{3s}}{{{eol}}}{{FAIL}}}}"


def test_exim_readsocket_gets_the_reject_line_and_accept_for_a_signed_sender(exim, port: int) -> None:  # type: ignore[no-untyped-def]
    reply = exim.expand(readsocket(port, "verify alice@example.ac.uk x@y.org\\n"))
    assert reply.startswith("reject 550 5.7.1 alice@example.ac.uk is protected against forgery")
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    assert exim.expand(readsocket(port, f"verify {signed} x@y.org\\n")) == "accept\n"
    # Without a trailing newline the request ends when Exim shuts down its sending side.
    assert exim.expand(readsocket(port, f"verify {signed} x@y.org", eol="|")) == "accept|"


def test_exim_readsocket_signs(exim, port: int) -> None:  # type: ignore[no-untyped-def]
    signed = exim.expand(readsocket(port, "sign alice@example.ac.uk\\n", eol=""))
    assert verify(signed.strip(), KEYRING, time.time()).reason is Reason.VALID
    assert exim.expand(readsocket(port, "sign bob@example.ac.uk\\n", eol="|")) == "-|"


RCPT_SNIPPET = Path(__file__).resolve().parents[2] / "deploy" / "exim" / "verification-rcpt.conf"


def rcpt_acl(port: int) -> str:
    """The RCPT ACL exactly as deploy/exim/verification-rcpt.conf gives it, pointed at the test's port."""
    snippet = RCPT_SNIPPET.read_text().replace("10042", str(port))
    return "acl_smtp_rcpt = acl_check_rcpt\nbegin acl\n" + snippet.strip() + "\n  accept\n"


def smtp_reply_to_rcpt(exim, config: str, sender: str, recipient: str) -> str:  # type: ignore[no-untyped-def]
    """Exim's reply to RCPT TO, its continuation lines (Exim wraps long replies) joined into one."""
    dialogue = f"HELO remote.example.org\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<{recipient}>\r\nQUIT\r\n"
    output = exim.run(["-bh", "192.0.2.25"], input=dialogue, config_text=config).stdout
    replies: list[str] = []
    continuing = False
    for line in output.splitlines():
        if not line[:3].isdigit():
            continue
        text = line[4:]
        if continuing:  # each continuation line repeats the enhanced status code
            replies[-1] += " " + re.sub(r"^\d\.\d{1,3}\.\d{1,3} ", "", text)
        else:
            replies.append(f"{line[:3]} {text}")
        continuing = line[3:4] == "-"
    return replies[3]  # greeting, HELO, MAIL, RCPT


def test_the_documented_exim_acl_rejects_forgeries_and_accepts_signed_mail(exim, port: int) -> None:  # type: ignore[no-untyped-def]
    config = rcpt_acl(port)
    assert smtp_reply_to_rcpt(exim, config, "alice@example.ac.uk", "x@other.org").startswith(
        "550 5.7.1 alice@example.ac.uk is protected against forgery and sender alice@example.ac.uk has no valid"
    )
    assert smtp_reply_to_rcpt(exim, config, "", "alice@example.ac.uk").startswith(
        "550 5.7.1 bounce to alice@example.ac.uk"
    )
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    assert smtp_reply_to_rcpt(exim, config, signed, "x@other.org").startswith("250 ")
    assert smtp_reply_to_rcpt(exim, config, "", signed).startswith("250 ")
    assert smtp_reply_to_rcpt(exim, config, "carol@example.ac.uk", "x@other.org").startswith("250 ")


def test_the_documented_exim_acl_checks_addresses_with_spaces_too(exim, port: int) -> None:  # type: ignore[no-untyped-def]
    # Postfix (recipient_delimiter) and Exim (local_part_suffix = =*) deliver this to alice; were the
    # request unreadable, the service's "error" would let the ACL accept the bounce unchecked.
    reply = smtp_reply_to_rcpt(exim, rcpt_acl(port), "", '"alice=x y"@example.ac.uk')
    assert reply.startswith("550 5.7.1 bounce to alice=x y@example.ac.uk refused")


def test_the_documented_exim_acl_defers_on_a_fault_in_the_service(  # type: ignore[no-untyped-def]
    exim, port: int, running_service: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Closing without an answer reads as "" in Exim, and the ACL acts only on reject/defer/warn.
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug outside decide()'s own guard")

    monkeypatch.setattr(running_service.service, "decide", broken)
    reply = smtp_reply_to_rcpt(exim, rcpt_acl(port), "alice@example.ac.uk", "x@other.org")
    assert reply.startswith("451 4.3.0 forgery check failed on our side")


def test_the_documented_exim_acl_defers_when_the_service_is_unreachable(exim) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    reply = smtp_reply_to_rcpt(exim, rcpt_acl(closed_port), "alice@example.ac.uk", "x@other.org")
    assert reply.startswith("451 4.3.0 forgery check unreachable")


@pytest.mark.parametrize("answer", [b"", b"error malformed request\n"], ids=["closed", "error"])
def test_the_documented_exim_acl_defers_on_an_answer_it_cannot_act_on(exim, answer: bytes) -> None:  # type: ignore[no-untyped-def]
    """Whatever the cause (a service of another version, a proxy in between), "" or "error" must not
    read as no objection: the ACL's other conditions act only on reject, defer and warn."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()

        def answer_once() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(answer)

        thread = threading.Thread(target=answer_once, daemon=True)
        thread.start()
        reply = smtp_reply_to_rcpt(exim, rcpt_acl(server.getsockname()[1]), "alice@example.ac.uk", "x@other.org")
        thread.join(5)
    assert reply.startswith("451 4.3.0 forgery check gave no usable answer")


def test_the_documented_exim_acl_defers_while_the_directory_is_not_loaded(exim) -> None:  # type: ignore[no-untyped-def]
    running = unreachable_service()
    try:
        port = running.listen("readsocket", readsocket_server.session_factory(running.service))
        reply = smtp_reply_to_rcpt(exim, rcpt_acl(port), "alice@example.ac.uk", "x@other.org")
    finally:
        running.stop()
    assert reply.startswith("451 4.3.0 forgery check temporarily unavailable")
