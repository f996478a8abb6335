"""Authentication-Results headers: RFC 8601 syntax (parsed back by authres) and each result."""

from __future__ import annotations

import time

import authres
import pytest
from service_harness import KEYRING, LineClient, RunningService

from callout import policy_server
from callout.authresults import header, is_ours
from callout.decision import Action, Decision, Role, unavailable
from gateway.store import Mode
from signed_sender import sign


def parsed(line: str) -> authres.AuthenticationResultsHeader:
    return authres.AuthenticationResultsHeader.parse(line)


@pytest.mark.parametrize(
    ("decision", "result", "prop"),
    [
        (Decision(Action.ACCEPT, "valid", "", checked="alice=sx@example.ac.uk", role=Role.SENDER), "pass", "mailfrom"),
        (Decision(Action.WARN, "expired", "", checked="carol@example.ac.uk", role=Role.SENDER), "fail", "mailfrom"),
        (
            Decision(Action.ACCEPT, "valid", "", checked="alice=sx@example.ac.uk", role=Role.BOUNCE_RECIPIENT),
            "pass",
            "rcptto",
        ),
        (Decision(Action.ACCEPT, "not_protected", "", checked="bob@other.org", role=Role.SENDER), "none", "mailfrom"),
    ],
)
def test_header_parses_and_carries_the_result(decision: Decision, result: str, prop: str) -> None:
    line = header("mail.example.ac.uk", decision, spf="pass", mailfrom="bob@other.org")
    got = parsed(line)
    assert got.authserv_id == "mail.example.ac.uk"
    ours = next(r for r in got.results if r.method == "x-signed-sender")
    assert ours.result == result
    assert [(p.type, p.name, p.value) for p in ours.properties] == [("smtp", prop, decision.checked)]
    assert next(r for r in got.results if r.method == "spf").result == "pass"


def test_unavailable_is_temperror_and_odd_addresses_cannot_break_the_header() -> None:
    assert "x-signed-sender=temperror" in header("mx", unavailable("down"))
    odd = Decision(Action.ACCEPT, "not_protected", "", checked='a;b (c)"@x.org', role=Role.SENDER)
    got = parsed(header("mx", odd))
    assert len(got.results) == 1 and got.results[0].result == "none"


def test_foreign_copies_of_our_authserv_id_are_recognised() -> None:
    assert is_ours("Authentication-Results: MAIL.example.ac.uk; x-signed-sender=pass", "mail.example.ac.uk")
    assert is_ours("authentication-results:mail.example.ac.uk;none", "mail.example.ac.uk")
    assert not is_ours("Authentication-Results: mx.other.org; spf=pass", "mail.example.ac.uk")
    assert not is_ours("Authentication-Results: mail.example.ac.uk.evil.org; none", "mail.example.ac.uk")


@pytest.mark.parametrize(
    "line",
    [
        "Authentication-Results: (relayed) mail.example.ac.uk; x-signed-sender=pass",
        "Authentication-Results: (a (nested) \\) comment)\r\n\tmail.example.ac.uk; x-signed-sender=pass",
        'Authentication-Results: "mail.example.ac.uk"; x-signed-sender=pass',
        'Authentication-Results: "mail.exam\\ple.ac.uk" (quoted); x-signed-sender=pass',
        "Authentication-Results:\r\n mail.example.ac.uk (comment after); x-signed-sender=pass",
    ],
)
def test_our_authserv_id_behind_a_comment_or_quoted_is_ours_as_readers_take_it(line: str) -> None:
    """RFC 8601 section 2.2: the authserv-id is a token or a quoted-string with CFWS around it. A
    reader (authres here, a list server) takes these for our verdict, so the strip must too (invariant 8).
    authres does not read the quoted form; others may, and stripping it costs nothing genuine."""
    if '"' not in line:
        assert parsed(line.replace("\r\n", "")).authserv_id.lower() == "mail.example.ac.uk"
    assert is_ours(line, "mail.example.ac.uk")


@pytest.mark.parametrize(
    "line",
    [
        "Authentication-Results: (mail.example.ac.uk) mx.other.org; spf=pass",
        'Authentication-Results: "mail.example.ac.uk.evil.org"; none',
        "Authentication-Results: (unclosed mail.example.ac.uk; none",
    ],
)
def test_our_authserv_id_only_in_a_comment_or_as_a_prefix_is_not_ours(line: str) -> None:
    assert not is_ours(line, "mail.example.ac.uk")


def test_policy_prepends_our_verdict_at_the_data_stage(running_service: RunningService) -> None:
    running_service.store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    running_service.call(running_service.service.refresh())
    spf_calls: list[tuple[str, str, str]] = []

    def fake_spf(ip: str, sender: str, helo: str) -> str:
        spf_calls.append((ip, sender, helo))
        return "softfail"

    port = running_service.listen(
        "policy", policy_server.session_factory(running_service.service, "mail.example.ac.uk", fake_spf)
    )
    client = LineClient(port)
    signed = sign("alice@example.ac.uk", KEYRING, time.time())
    client.send(
        b"request=smtpd_access_policy\nprotocol_state=DATA\ninstance=m1\nclient_address=192.0.2.7\n"
        b"helo_name=mx.other.org\nsender=" + signed.encode() + b"\nrecipient=x@y.org\n\n"
    )
    reply = client.read_until(b"\n\n").decode()
    assert reply.startswith("action=PREPEND Authentication-Results: mail.example.ac.uk; x-signed-sender=pass")
    assert "spf=softfail" in reply and spf_calls == [("192.0.2.7", signed, "mx.other.org")]
    client.send(b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=" + signed.encode() + b"\n\n")
    assert client.read_until(b"\n\n") == b"action=DUNNO"
    client.close()
