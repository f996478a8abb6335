"""Call-forward for internal domains: the pure decision refined by the departmental server's answer."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_harness import RunningService
from smtp_servers import Scripted, Servers, unused_port

from callout.callout_client import CalloutClient, CalloutResult, Outcome
from callout.callout_responder import CalloutHandler, limits_from
from callout.decision import Action, Decision, Role
from callout.forward import ForwardCheck, client_from, combine, forward_from
from callout.serve import adapters
from gateway.config import ConfigError, parse
from gateway.store import Mode

DEPT = "dept.example.ac.uk"


@pytest.fixture
def servers() -> Iterator[Servers]:
    running = Servers()
    yield running
    running.close()


def no_dns(domain: str) -> Any:
    raise AssertionError(f"DNS asked about {domain}")


class Setup:
    def __init__(self, running: RunningService, servers: Servers) -> None:
        self.running = running
        self.dept = Scripted("550 5.1.1 No such user here")
        self.port = servers.smtp(self.dept)
        self.check = self.checking(self.port)

    def checking(self, port: int) -> ForwardCheck:
        client = CalloutClient(helo="gateway.test", routes={DEPT: ("127.0.0.1", port)}, resolver=no_dns, timeout=5)
        return ForwardCheck(self.running.service, client, [DEPT])

    def decide(self, sender: str, recipient: str, check: ForwardCheck | None = None) -> Decision:
        request = self.running.service.request(sender, recipient, "192.0.2.1")
        return self.running.call((check or self.check).decide(request, "test"))


@pytest.fixture
def setup(running_service: RunningService, servers: Servers) -> Setup:
    store = running_service.store
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    store.add_alias(f"webmaster@{DEPT}", ["alice"])
    running_service.call(running_service.service.refresh())
    return Setup(running_service, servers)


def test_a_sender_its_departmental_server_refuses_is_rejected(setup: Setup) -> None:
    decision = setup.decide(f"ghost@{DEPT}", "someone@other.org")
    assert (decision.action, decision.code, decision.enhanced) == (Action.REJECT, 550, "5.1.0")
    assert decision.reason == "callout_negative" and "550 5.1.1 No such user here" in decision.text
    assert setup.dept.seen[1:3] == ["MAIL <>", f"RCPT ghost@{DEPT}"]


def test_a_bounce_to_an_address_its_server_refuses_is_rejected_as_bad_mailbox(setup: Setup) -> None:
    decision = setup.decide("", f"ghost@{DEPT}")
    assert (decision.action, decision.enhanced, decision.role) == (Action.REJECT, "5.1.1", Role.BOUNCE_RECIPIENT)


def test_a_positive_answer_keeps_the_local_accept(setup: Setup) -> None:
    setup.dept.rcpt_reply = "250 OK"
    decision = setup.decide(f"carol@{DEPT}", "someone@other.org")
    assert decision.action is Action.ACCEPT and decision.reason == "not_protected"


def test_an_unreachable_departmental_server_defers_never_guesses(setup: Setup) -> None:
    decision = setup.decide(f"carol@{DEPT}", "someone@other.org", setup.checking(unused_port()))
    assert (decision.action, decision.code, decision.enhanced) == (Action.DEFER, 451, "4.4.3")
    assert decision.reason == "callout_unavailable" and "cannot connect" in decision.text


def test_our_own_protected_users_are_judged_by_signature_and_never_called(setup: Setup) -> None:
    decision = setup.decide(f"webmaster@{DEPT}", "someone@other.org")
    assert decision.action is Action.REJECT and decision.enhanced == "5.7.1"
    assert setup.dept.seen == []


def test_other_domains_and_recipients_of_normal_mail_are_never_called(setup: Setup) -> None:
    assert setup.decide("someone@other.org", f"ghost@{DEPT}").action is Action.ACCEPT
    assert setup.decide("", "ghost@other.org").action is Action.ACCEPT
    assert setup.dept.seen == []


def callout_to_responder(setup: Setup, forward: Any, recipient: str) -> tuple[int, bytes]:
    """A remote MTA's callout (MAIL FROM:<>, RCPT TO) to our responder, which forwards with `forward`."""
    handler = CalloutHandler(setup.running.service, forward=forward)
    server = setup.running.call(handler.listen("127.0.0.1", 0))
    setup.running.servers.append(server)
    with smtplib.SMTP("127.0.0.1", server.sockets[0].getsockname()[1], timeout=10) as smtp:
        smtp.ehlo("mx.remote.test")
        smtp.mail("")
        return smtp.rcpt(recipient)


def test_the_callout_responder_forwards_callouts_for_internal_domains(setup: Setup) -> None:
    code, text = callout_to_responder(setup, setup.check, f"ghost@{DEPT}")
    assert code == 550 and text.decode().startswith(f"5.1.1 bounce to ghost@{DEPT} refused")


def localised_server(servers: Servers, rcpt_reply: bytes) -> int:
    """A departmental server that answers RCPT in UTF-8, as localised Exchange and Postfix setups do."""

    async def dialogue(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 dept.test ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            writer.write(rcpt_reply if verb == b"RCPT" else b"221 bye\r\n" if verb == b"QUIT" else b"250 ok\r\n")
            await writer.drain()
        writer.close()

    server = servers.call(asyncio.start_server(dialogue, "127.0.0.1", 0))
    servers.servers.append(server)
    return int(server.sockets[0].getsockname()[1])


def test_a_localised_temporary_answer_reaches_the_callout_caller_as_a_4xx(setup: Setup, servers: Servers) -> None:
    port = localised_server(servers, "450 4.2.1 Postfach vorübergehend gesperrt\r\n".encode())
    code, text = callout_to_responder(setup, setup.checking(port), f"carol@{DEPT}")
    assert code == 451, text  # never 500: a temporary failure must stay temporary (invariant 6)
    assert text.isascii() and text.startswith(b"4.4.3 cannot verify carol@dept.example.ac.uk")
    assert b"Postfach vor?bergehend gesperrt" in text


def test_a_mail_exchanger_that_cannot_be_connected_to_by_name_defers_never_guesses(setup: Setup) -> None:
    # A label over 63 characters (dnspython writes odd octets as \\DDD): the IDNA codec behind
    # getaddrinfo raises UnicodeError, a ValueError, which is not the address being unusable.
    async def mx(domain: str) -> list[tuple[int, str]]:
        return [(10, "mx" + "\\040" * 16 + "." + domain)]

    client = CalloutClient(helo="gateway.test", resolver=mx, timeout=5)
    decision = setup.decide(f"carol@{DEPT}", "someone@other.org", ForwardCheck(setup.running.service, client, [DEPT]))
    assert (decision.action, decision.code, decision.reason) == (Action.DEFER, 451, "callout_unavailable")
    assert "cannot connect" in decision.text


@pytest.mark.parametrize("fault", [RuntimeError, ValueError])
def test_a_fault_in_the_callout_path_answers_the_caller_451_never_500(setup: Setup, fault: type[Exception]) -> None:
    async def broken(host: str, port: int) -> Any:
        raise fault("connector failed: key=/etc/antiforgery/key")

    client = CalloutClient(helo="gateway.test", routes={DEPT: ("127.0.0.1", 1)}, resolver=no_dns, connect=broken)
    handler = CalloutHandler(setup.running.service, forward=ForwardCheck(setup.running.service, client, [DEPT]))
    server = setup.running.call(handler.listen("127.0.0.1", 0))
    setup.running.servers.append(server)
    with smtplib.SMTP("127.0.0.1", server.sockets[0].getsockname()[1], timeout=10) as smtp:
        smtp.ehlo("mx.remote.test")
        smtp.mail("")
        code, text = smtp.rcpt(f"carol@{DEPT}")
        assert smtp.noop()[0] == 250  # the session goes on
    assert (code, text) == (451, b"4.3.0 verification failed on our side; try again later")


def test_combine_is_pure_and_keeps_who_was_checked() -> None:
    local = Decision(Action.ACCEPT, "not_protected", "x", checked=f"a@{DEPT}", role=Role.SENDER)
    assert combine(local, CalloutResult(Outcome.POSITIVE, "250 OK")) is local
    temporary = combine(local, CalloutResult(Outcome.TEMPORARY, "timed out"))
    assert temporary.checked == f"a@{DEPT}" and temporary.role is Role.SENDER and temporary.code == 451


def config(text: str) -> Any:
    return parse(Path("/etc/antiforgery/antiforgery.toml"), text)


def test_settings_build_the_client_limits_and_check_or_name_the_bad_key(running_service: RunningService) -> None:
    plain, service = config(""), running_service.service
    assert forward_from(plain, service) is None and "callout" not in adapters(plain, service)
    on = config(
        f'[verification]\ncallout_listen = "127.0.0.1:2525"\ncallout_domains = ["{DEPT}"]\n'
        f'callout_routes = ["{DEPT}=127.0.0.1:2526"]\ncallout_burst = 3\ncallout_hostname = "mx.example.ac.uk"\n'
    )
    client = client_from(on)
    assert client.routes == {DEPT: ("127.0.0.1", 2526)} and client.helo == "mx.example.ac.uk"
    assert limits_from(on).burst == 3
    listen, handler = adapters(on, service)["callout"]
    assert listen == "127.0.0.1:2525" and isinstance(handler, CalloutHandler) and handler.forward is not None
    with pytest.raises(ConfigError, match=r"\[verification\] callout_routes: 'nowhere' is not domain=host:port"):
        client_from(config('[verification]\ncallout_routes = ["nowhere"]\n'))
    with pytest.raises(ConfigError, match=r"\[verification\] callout_max_sessions must be at least 1"):
        limits_from(config("[verification]\ncallout_max_sessions = 0\n"))


def test_the_policy_adapter_asks_an_internal_domains_server_about_its_senders(setup: Setup) -> None:
    from service_harness import LineClient

    from callout import policy_server

    port = setup.running.listen("policy", policy_server.session_factory(setup.running.service, forward=setup.check))
    client = LineClient(port)
    client.send(
        b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=ghost@"
        + DEPT.encode()
        + b"\nrecipient=x@other.org\n\n"
    )
    assert client.read_until(b"\n\n").startswith(b"action=550 5.1.0 sender ghost@" + DEPT.encode())
    client.send(b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=someone@other.org\nrecipient=x@y.org\n\n")
    assert client.read_until(b"\n\n") == b"action=DUNNO"
    client.close()
