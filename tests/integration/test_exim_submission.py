"""Submission through the real Exim, configured with deploy/exim/submission.conf as shipped (ports and paths replaced).

An Exim daemon on two loopback ports: Exim's own submission (STARTTLS, then AUTH PLAIN with a test
authenticator), where the MAIL ACL asks the readsocket service to sign and the smtp transport's
return_path sends the signed address; and the port the submission proxy relays to. swaks is the
mail client; each queued message is then delivered with `exim -M` to smtp-sink, or to a greylisting
sink, and what arrives there is the envelope the next hop saw. The RCPT ACL includes
deploy/exim/verification-rcpt.conf, as a gateway's would.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from components import Exim, SmtpSink, free_port, require_component, stop_process
from greylist_sink import GreylistSink
from proxy_harness import PASSWORD, RunningProxy
from service_harness import KEYRING, LineClient, RunningService

from callout import readsocket_server
from callout.decision import Rules
from gateway.store import Mode, Store
from gateway.submission.tls import make_self_signed
from signed_sender import Policy, TagKind, sign, verify

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "exim"
SNIPPET = DEPLOY / "submission.conf"
VERIFICATION = DEPLOY / "verification-rcpt.conf"
LOGINS = "alice@example.ac.uk alice\nbob@example.ac.uk bob\n"
_BEGIN = re.compile(r"^begin (\w+)\s*$", re.MULTILINE)
StartProxy = Callable[..., RunningProxy]


def sections(text: str) -> dict[str, str]:
    """An Exim configuration split at its `begin` lines: {"main": ..., "acl": ..., ...}."""
    parts = _BEGIN.split(text)
    found = {"main": parts[0]}
    found.update(zip(parts[1::2], parts[2::2], strict=True))
    return found


@dataclass
class Ports:
    readsocket: int
    submission: int  # Exim's own submission (A)
    proxy: int  # what the proxy relays to (B), 10025 in the snippet
    sink: int
    greylist: int


def exim_config(ports: Ports, files: Path) -> str:
    """The site's configuration around the two shipped snippets."""
    ours = sections(SNIPPET.read_text().replace("127.0.0.1:10042", f"127.0.0.1:{ports.readsocket}"))
    ours["acl"] = ours["acl"].replace("{10025}", f"{{{ports.proxy}}}")
    ours["acl"] = ours["acl"].replace("/etc/exim4/antiforgery-sender-logins", str(files / "logins"))
    verification = VERIFICATION.read_text().replace("127.0.0.1:10042", f"127.0.0.1:{ports.readsocket}")
    verification = verification.split("acl_check_rcpt:\n", 1)[1]
    return f"""{ours["main"]}
local_interfaces = <; 127.0.0.1.{ports.submission} ; 127.0.0.1.{ports.proxy}
pid_file_path = {files}/exim.pid
tls_advertise_hosts = *
tls_certificate = {files}/tls.crt
tls_privatekey = {files}/tls.key
auth_advertise_hosts = ${{if eq{{$tls_in_cipher}}{{}}{{}}{{*}}}}
acl_smtp_mail = acl_check_mail
acl_smtp_rcpt = acl_check_rcpt

begin acl

acl_check_mail:
  require acl = antiforgery_sign
  accept

acl_check_rcpt:
  accept acl = antiforgery_authenticated
{verification}
  accept acl = antiforgery_proxy
  deny   message = relay not permitted
{ours["acl"]}
begin routers

to_the_next_hop:
  driver     = manualroute
  route_list = greylisted.example 127.0.0.1::{ports.greylist} ; * 127.0.0.1::{ports.sink}
  transport  = remote_smtp
  self       = send

begin transports
{ours["transports"]}
begin authenticators

plain:
  driver           = plaintext
  public_name      = PLAIN
  server_prompts   = :
  server_condition = ${{if eq{{$auth3}}{{{PASSWORD}}}}}
  server_set_id    = $auth2

begin retry

*  *  F,1h,10m
"""


class EximDaemon:
    """`exim -bdf` (a daemon in the foreground) on the configuration's loopback ports."""

    def __init__(self, exim: Exim, config_text: str, ports: Ports) -> None:
        self.exim = exim
        self.config_text = config_text
        config = exim.config_file(config_text)
        self.process = subprocess.Popen(
            [str(exim.binary), "-C", str(config), "-bdf"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.time() + 15
        for port in (ports.submission, ports.proxy):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"exim -bdf exited {self.process.returncode}: {self.log()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError(f"exim did not listen on {port}: {self.log()}") from None
                    time.sleep(0.05)

    def deliver(self, message_id: str) -> str:
        """One delivery attempt of a queued message (`exim -M`, retry times ignored); Exim's output."""
        result = self.exim.run(["-M", message_id], config_text=self.config_text, check=False)
        return f"{result.stdout}{result.stderr}"

    def log(self) -> str:
        path = self.exim.log_directory / "mainlog"
        return path.read_text(errors="replace")[-6000:] if path.exists() else ""

    def stop(self) -> None:
        stop_process(self.process)


@dataclass
class Site:
    exim: EximDaemon
    ports: Ports
    service: RunningService
    greylist: GreylistSink


@pytest.fixture
def files() -> Iterator[Path]:
    """Certificate, key and login map where Exim's own user can read them."""
    path = Path(tempfile.mkdtemp(prefix="antiforgery-exim-site-"))
    path.chmod(0o755)
    make_self_signed(path / "tls.crt", path / "tls.key", "smtp.example.ac.uk", dt.datetime.now(dt.UTC))
    (path / "tls.key").chmod(0o644)  # a throw-away key; Exim reads it as its own user
    (path / "logins").write_text(LOGINS)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def site(
    exim: Exim, files: Path, service: RunningService, smtp_sink: SmtpSink, request: pytest.FixtureRequest
) -> Iterator[Site]:
    greylist = GreylistSink()
    readsocket = service.listen("readsocket", readsocket_server.session_factory(service.service))
    ports = Ports(readsocket, free_port(), free_port(), smtp_sink.port, greylist.port)
    daemon = EximDaemon(exim, exim_config(ports, files), ports)
    yield Site(daemon, ports, service, greylist)
    daemon.stop()
    greylist.stop()


def swaks(port: int, sender: str, recipient: str, login: str | None) -> subprocess.CompletedProcess[str]:
    if shutil.which("swaks") is None:
        require_component("swaks", "the tests submit with it as a mail client does (Debian package swaks)")
    command = ["swaks", "--server", f"127.0.0.1:{port}", "--from", sender, "--to", recipient, "--timeout", "30"]
    command += ["--helo", "laptop.example.org"]
    if login is not None:
        command += ["--tls", "--auth", "PLAIN", "--auth-user", login, "--auth-password", PASSWORD]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def queued_id(result: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"^<[-~]  250 OK id=(\S+)$", result.stdout, re.MULTILINE)
    assert match, result.stdout
    return match[1]


def reply_to(result: subprocess.CompletedProcess[str], command: str) -> str:
    """The server's reply to MAIL or RCPT, as swaks shows it."""
    lines = result.stdout.splitlines()
    index = next(i for i, line in enumerate(lines) if line[4:].startswith(command))
    return next(line for line in lines[index + 1 :] if line.startswith("<"))


def sign_request(port: int, address: str) -> str:
    """What the readsocket service answers Exim's `sign` request now."""
    client = LineClient(port)
    try:
        client.send(f"sign {address}\n".encode())
        answer: bytes = client.read_until(b"\n")
        return answer.decode()
    finally:
        client.close()


def envelope_sender(message: str) -> str:
    match = re.search(r"^X-Mail-Args: <([^>]*)>", message, re.MULTILINE)
    assert match, message
    return match[1]


def test_own_submission_is_signed_for_an_opted_in_user_and_unchanged_otherwise(site: Site, smtp_sink: SmtpSink) -> None:
    alice = queued_id(swaks(site.ports.submission, "alice@example.ac.uk", "bob@other.org", "alice"))
    bob = queued_id(swaks(site.ports.submission, "bob@example.ac.uk", "carol@other.org", "bob"))
    # Signed once, at MAIL: the spool keeps the sender as submitted and the signed one beside it.
    spooled = site.exim.exim.run(["-Mvh", alice], config_text=site.exim.config_text).stdout
    stored = re.search(r"^-aclm _af_signed \d+\n(.*)$", spooled, re.MULTILINE)
    assert stored and spooled.splitlines()[2] == "<alice@example.ac.uk>", spooled
    for message_id in (alice, bob):
        site.exim.deliver(message_id)
    messages = {envelope_sender(m).partition("=")[0].partition("@")[0]: m for m in smtp_sink.messages(2)}
    assert set(messages) == {"alice", "bob"}, site.exim.log()
    assert envelope_sender(messages["alice"]) == stored[1]
    verdict = verify(stored[1], KEYRING, time.time())
    assert verdict.ok and verdict.kind is TagKind.ENVELOPE and verdict.address == "alice@example.ac.uk"
    assert "\nFrom: alice@example.ac.uk" in messages["alice"]  # the header is the user's, unsigned
    assert envelope_sender(messages["bob"]) == "bob@example.ac.uk"


def test_a_login_may_not_send_as_someone_else(site: Site) -> None:
    result = swaks(site.ports.submission, "alice@example.ac.uk", "bob@other.org", "bob")
    assert reply_to(result, "MAIL FROM").startswith("<~* 553 5.7.1 bob may not send as <alice@example.ac.uk>")


def test_mail_from_the_proxy_port_is_verified_relayed_and_not_signed_again(
    site: Site, smtp_sink: SmtpSink, start_proxy: StartProxy
) -> None:
    proxy = start_proxy(site.service.store, site.ports.proxy)
    site.exim.deliver(queued_id(swaks(proxy.port, "alice@example.ac.uk", "bob@other.org", "alice")))
    signed = envelope_sender(smtp_sink.messages(1)[0])
    assert verify(signed, KEYRING, time.time()).ok, site.exim.log()
    assert f"<= {signed} H=(smtp.example.ac.uk) [127.0.0.1]" in site.exim.log()  # as the proxy sent it
    # Signed an hour ago by someone else: relayed as it came (Exim signs authenticated sessions only).
    earlier = sign("alice@example.ac.uk", KEYRING, time.time() - 3600)
    site.exim.deliver(queued_id(swaks(site.ports.proxy, earlier, "carol@other.org", None)))
    assert earlier in [envelope_sender(m) for m in smtp_sink.messages(2)]
    # Unsigned straight to the proxy's port: the verification lines refuse it.
    forged = swaks(site.ports.proxy, "alice@example.ac.uk", "carol@other.org", None)
    assert reply_to(forged, "RCPT TO").startswith("<** 550-5.7.1 alice@example.ac.uk is protected"), forged.stdout


def test_greylisted_first_attempt_and_the_retry_carry_the_same_signed_sender(site: Site) -> None:
    message_id = queued_id(swaks(site.ports.submission, "alice@example.ac.uk", "bob@greylisted.example", "alice"))
    first = site.exim.deliver(message_id)
    # alice opts out while her message waits: a sender signed anew at the retry would now go out
    # unsigned (the service answers "-"); the retry must carry the address signed at MAIL.
    site.service.store.set_mode("alice", Mode.OFF)
    site.service.call(site.service.service.refresh())
    assert sign_request(site.ports.readsocket, "alice@example.ac.uk") == "-"
    retry = site.exim.deliver(message_id)
    attempts = site.greylist.wait_delivered(1)
    outcomes = [(a.recipients[0][1], a.data is not None) for a in attempts]
    assert outcomes == [(451, False), (250, True)], f"{attempts}\n{first}\n{retry}\n{site.exim.log()}"
    assert attempts[0].mail == attempts[1].mail and attempts[0].mail.startswith(b"MAIL FROM:<alice=s"), attempts
    signed = attempts[0].mail.split(b"<", 1)[1].split(b">", 1)[0].decode()
    assert verify(signed, KEYRING, time.time()).ok


def bs_session(exim: Exim, config: str, login: str, sender: str) -> str:
    """Exim's reply to MAIL in an -bs session that authenticated as `login` (-oMaa, -oMai), on one line."""
    dialogue = f"EHLO laptop.example.org\r\nMAIL FROM:<{sender}>\r\nQUIT\r\n"
    args = ["-bs", "-oMa", "192.0.2.7", "-oMaa", "PLAIN", "-oMai", login]
    output = exim.run(args, input=dialogue, config_text=config).stdout
    replies: list[str] = []
    continuing = False
    for line in output.splitlines():
        if continuing:  # Exim wraps a long reply; each continuation repeats the enhanced code
            replies[-1] += " " + re.sub(r"^\d\.\d{1,3}\.\d{1,3} ", "", line[4:])
        else:
            replies.append(f"{line[:3]} {line[4:]}")
        continuing = line[3:4] == "-"
    return replies[2]  # greeting, EHLO, MAIL


@pytest.fixture
def no_directory() -> Iterator[RunningService]:
    """A service whose store was unreachable at start: it answers `defer` to every sign request."""
    store = Store.open("postgresql+psycopg://nobody@127.0.0.1:1/none", check_schema=False)  # nothing listens
    running = RunningService(store, Rules(keyring=KEYRING, policy=Policy())).start()
    yield running
    running.stop()


def test_without_a_directory_or_without_the_service_mail_is_deferred_never_sent_unsigned(
    exim: Exim, files: Path, no_directory: RunningService
) -> None:
    readsocket = no_directory.listen("readsocket", readsocket_server.session_factory(no_directory.service))
    cases = {
        readsocket: "451 4.3.0 forgery protection unavailable: the directory has not been loaded; try again later",
        free_port(): "451 4.3.0 forgery protection unreachable; try again later",  # nothing listens there
    }
    for port, expected in cases.items():
        config = exim_config(Ports(port, free_port(), free_port(), 1, 1), files)
        assert bs_session(exim, config, "alice", "alice@example.ac.uk") == expected
    assert bs_session(exim, config, "bob", "alice@example.ac.uk").startswith("553 5.7.1")  # checked before asking
