"""Remote sites' own sender verification, pointed at us: the real Postfix and the real Exim.

Seed 003, "Message relay": "If a remote site ... performs call-back verification of remote email
addresses, this will appear to ppsw as if it is being sent a bounce ... ppsw will verify it as
usual and communicate the result (accept or reject) back to the site performing the call-back."
Here the remote site is someone else's server: a private Postfix with `reject_unverified_sender`,
or Exim with `verify = sender/callout`, whose route for example.ac.uk (DNS, in real life) leads to
our callout responder on a loopback port. Each receives mail from six senders and must accept a
fresh signed address, a user who has not opted in and one in testing mode (which "does not allow
third parties to detect forgery using call-back verification"), and reject an unsigned, an expired
and a blacklisted address. Postfix runs with its defaults, with a time-stamped probe sender
(`address_verify_sender_ttl`) and with `smtp_address_verify_target = data`; Exim with the
`callout` options a postmaster picks (`defer_ok`, `postmaster`, `random`). When we cannot decide
(451), Postfix tells its client to retry and Exim defers unless told `defer_ok`. Last, the same
Postfix asks our MX itself (the policy service of deploy/postfix/verification-main.cf), which
answers probes as the responder does.

Every run probes afresh: Postfix keeps its verify cache in memory only and each test starts its
own Postfix; Exim gets a new spool, so an empty callout cache (spool/db/callout), per test. The
store backend makes no difference to what the remote MTAs see, so these run on SQLite only.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from components import EXIM_USER, Exim, Postfix, require_component
from service_harness import KEYRING, RunningService

from callout import milter_server, policy_server
from callout.callout_responder import CalloutHandler
from callout.service import VerificationService
from gateway.store import Mode
from signed_sender import sign

StartPostfix = Callable[..., Postfix]
SNIPPET = Path(__file__).resolve().parents[2] / "deploy" / "postfix" / "verification-main.cf"
DAY = 86400

pytestmark = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


@dataclass(frozen=True)
class Case:
    name: str
    sender: str
    accepted: bool


@pytest.fixture
def cases(running_service: RunningService) -> list[Case]:
    """The six senders, with alice in full mode, carol in testing mode and bob not opted in."""
    store = running_service.store
    store.add_user("alice", "alice@example.ac.uk", mode=Mode.FULL)
    store.add_user("carol", "carol@example.ac.uk", mode=Mode.TESTING)
    store.add_user("bob", "bob@example.ac.uk")
    now = time.time()
    leaked = sign("alice@example.ac.uk", KEYRING, now - 3 * 3600)  # tags differ by the hour
    until = dt.datetime.fromtimestamp(now + 7 * DAY, dt.UTC)
    store.blacklist_add(leaked.lower(), "alice@example.ac.uk", "leaked", until)
    running_service.call(running_service.service.refresh())
    return [
        Case("signed", sign("alice@example.ac.uk", KEYRING, now), accepted=True),
        Case("unsigned", "alice@example.ac.uk", accepted=False),
        Case("expired", sign("alice@example.ac.uk", KEYRING, now - 9 * DAY), accepted=False),
        Case("blacklisted", leaked, accepted=False),
        Case("not opted in", "bob@example.ac.uk", accepted=True),
        Case("testing mode, unsigned", "carol@example.ac.uk", accepted=True),
    ]


def start_responder(running_service: RunningService, service: VerificationService | None = None) -> int:
    """Our callout responder with its production limits, on the service's loop; returns its port."""
    handler = CalloutHandler(service or running_service.service, hostname="callout.example.ac.uk")
    server = running_service.call(handler.listen("127.0.0.1", 0))
    running_service.servers.append(server)
    return int(server.sockets[0].getsockname()[1])


@pytest.fixture
def responder(running_service: RunningService, cases: list[Case]) -> int:
    return start_responder(running_service)


# --- Postfix: reject_unverified_sender -------------------------------------------------------------


def remote_postfix(port: int, extra: str = "") -> str:
    """main.cf lines of the remote site, other.org, whose mail for example.ac.uk goes to `port`."""
    return f"""myhostname = mx.other.org
relay_domains = other.org
mynetworks = 192.0.2.0/24
smtpd_sender_restrictions = reject_unverified_sender
# The default 450 would have the client retry a forgery for days.
unverified_sender_reject_code = 550
# In memory only, so every test probes afresh; smtpd waits for the probe's answer, polling each
# second (for up to 30 on a loaded machine; an answer usually comes within the first).
address_verify_map =
address_verify_poll_count = 30
address_verify_poll_delay = 1s
# Stands in for DNS: example.ac.uk's mail host.
transport_maps = inline:{{ example.ac.uk=smtp:[127.0.0.1]:{port} }}
{extra}"""


def swaks_rcpt(port: int, sender: str) -> str:
    """The reply to RCPT TO for mail from `sender` to a user of the remote site, as swaks shows it."""
    if shutil.which("swaks") is None:
        require_component("swaks", "not on PATH (Debian package swaks)")
    command = ["swaks", "--server", f"127.0.0.1:{port}", "--from", sender, "--to", "someone@other.org",
               "--quit-after", "RCPT", "--timeout", "60"]  # fmt: skip
    lines = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False).stdout.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith(" -> RCPT TO"))
    return next(line for line in lines[index + 1 :] if line.startswith(("<-", "<**")))


def check_postfix(mta: Postfix, cases: list[Case], asked: Postfix | None = None) -> None:
    """Mail from each case's sender to `mta`; `asked` is the Postfix its probes go to, if not the responder."""
    # Three at a time: each waits a poll interval, and the responder allows five sessions per client.
    with ThreadPoolExecutor(max_workers=3) as pool:
        replies = list(pool.map(lambda case: swaks_rcpt(mta.port, case.sender), cases))
    for case, reply in zip(cases, replies, strict=True):
        logs = f"\nremote site's maillog:\n{mta.log()}" + (f"\nour MX's maillog:\n{asked.log()}" if asked else "")
        why = f"{case.name}: {reply}{logs}"
        if case.accepted:
            assert reply.startswith("<-  250 "), why
        else:
            # The probe's 550 5.7.1 from us, passed on as the reason for refusing the sender.
            assert reply.startswith("<** 550 5.1.7 ") and "undeliverable address" in reply, why
            assert "said: 550 5.7.1 " in reply and "protected against forgery and did not send" in reply, why


#: main.cf lines, and what the remote maillog shows when the variant is in effect.
POSTFIX_VARIANTS = {
    "defaults": ("", r"from=<double-bounce@mx\.other\.org>"),
    # Probe senders like double-bounceJQZ3@mx.other.org: still probes, not senders to check.
    "time-dependent probe sender": ("address_verify_sender_ttl = 7h\n", r"from=<double-bounce[0-9B-Z]+@mx\.other"),
    # The probe's verdict is the reply to DATA: 354 for a deliverable address, then it hangs up.
    "verify target data": ("smtp_address_verify_target = data\n", r"status=deliverable \(354 "),
}


@pytest.mark.parametrize(("variant", "evidence"), POSTFIX_VARIANTS.values(), ids=POSTFIX_VARIANTS.keys())
def test_postfix_reject_unverified_sender_gets_our_answer(
    responder: int, cases: list[Case], postfix: StartPostfix, variant: str, evidence: str
) -> None:
    mta = postfix(main_cf=remote_postfix(responder, variant))
    check_postfix(mta, cases)
    log = mta.log()
    probes = [line for line in log.splitlines() if "relay=127.0.0.1" in line]
    assert len(probes) == len(cases), "one probe per sender, none answered from a cache:\n" + "\n".join(probes)
    assert re.search(evidence, log), f"no {evidence!r} in the remote site's maillog:\n{log}"


def test_postfix_defers_while_we_cannot_decide(running_service: RunningService, postfix: StartPostfix) -> None:
    cold = VerificationService(running_service.store, running_service.rules)  # never started: no snapshot
    mta = postfix(main_cf=remote_postfix(start_responder(running_service, cold)))
    reply = swaks_rcpt(mta.port, "alice@example.ac.uk")
    # Our 451 4.3.0 makes the probe "deferred": the remote client is told to try again, not refused.
    assert reply.startswith("<** 450 4.1.7 ") and "said: 451 4.3.0 forgery check temporarily" in reply, reply


def test_postfix_probing_our_mx_gets_the_policy_service_answer(
    running_service: RunningService, cases: list[Case], postfix: StartPostfix
) -> None:
    """Without the responder: our MX's RCPT check (deploy/postfix/verification-main.cf) answers probes."""
    service = running_service.service
    policy = running_service.listen("policy", policy_server.session_factory(service, "mx.example.ac.uk"))
    milter = running_service.listen("milter", milter_server.session_factory(service, "mx.example.ac.uk"))
    main_cf = SNIPPET.read_text().replace("127.0.0.1:10040", f"127.0.0.1:{policy}")
    our_mx = postfix(main_cf=main_cf.replace("127.0.0.1:10043", f"127.0.0.1:{milter}") + "mynetworks = 192.0.2.0/24\n")
    check_postfix(postfix(main_cf=remote_postfix(our_mx.port)), cases, asked=our_mx)


# --- Exim: verify = sender/callout ---------------------------------------------------------------


def remote_exim(port: int, spool: Path, verify: str) -> str:
    """The remote site's configuration: example.ac.uk's mail host is our responder on `port`."""
    return f"""primary_hostname = mx.other.org
spool_directory = {spool}
domainlist local_domains = other.org
acl_smtp_rcpt = acl_check_rcpt

begin acl
acl_check_rcpt:
  require verify = {verify}
  accept  domains = +local_domains
  deny    message = relaying not permitted

begin routers
# Stands in for DNS. 127.0.0.1 is this host: `self = send` and `allow_localhost` let Exim call it.
example_ac_uk:
  driver = manualroute
  domains = example.ac.uk
  route_list = * 127.0.0.1 byname
  self = send
  transport = remote_smtp

begin transports
remote_smtp:
  driver = smtp
  port = {port}
  allow_localhost
"""


@pytest.fixture
def exim_spool(exim: Exim) -> Path:
    """A new spool directory, so a new callout cache, for this test only."""
    spool = Path(tempfile.mkdtemp(prefix="spool-", dir=exim.workdir))
    account = pwd.getpwnam(EXIM_USER)
    os.chown(spool, account.pw_uid, account.pw_gid)
    return spool


def smtp_replies(output: str) -> list[str]:
    """Exim's replies in a -bh session, each a multi-line reply joined into one string."""
    replies: list[str] = []
    current: list[str] = []
    for line in output.splitlines():
        if len(line) >= 4 and line[:3].isdigit() and line[3] in " -":
            current.append(line)
            if line[3] == " ":
                replies.append("\n".join(current))
                current = []
    return replies


def exim_rcpt(exim: Exim, config: str, sender: str) -> str:
    """The RCPT reply of a fake SMTP session from 192.0.2.1 (-bhc: -bh, with callouts really made)."""
    dialogue = f"EHLO client.example.org\r\nMAIL FROM:<{sender}>\r\nRCPT TO:<someone@other.org>\r\nQUIT\r\n"
    result = exim.run(["-bhc", "192.0.2.1"], input=dialogue, config_text=config)
    replies = smtp_replies(result.stdout)
    assert len(replies) == 5, result.stdout + result.stderr  # greeting, EHLO, MAIL, RCPT, QUIT
    return replies[3]


EXIM_VERIFY = {
    "defer_ok": "sender/callout=10s,defer_ok",
    # Also asks RCPT TO:<postmaster@example.ac.uk> in the same session, after RSET.
    "postmaster": "sender/callout=10s,defer_ok,postmaster",
    # First asks for a made-up local part: had we accepted it, Exim would take every address as good.
    "random": "sender/callout=10s,defer_ok,random",
}


@pytest.mark.parametrize("verify", EXIM_VERIFY.values(), ids=EXIM_VERIFY.keys())
def test_exim_sender_callout_gets_our_answer(
    exim: Exim, exim_spool: Path, responder: int, cases: list[Case], verify: str
) -> None:
    config = remote_exim(responder, exim_spool, verify)
    for case in cases:
        reply = exim_rcpt(exim, config, case.sender)
        if case.accepted:
            assert reply == "250 Accepted", f"{case.name}: {reply}"
        else:
            assert reply.startswith(f"550-Verification failed for <{case.sender}>"), f"{case.name}: {reply}"
            assert "550-Response: 550 5.7.1 bounce to" in reply and reply.endswith("550 Sender verify failed"), reply


def test_exim_defers_while_we_cannot_decide_unless_told_defer_ok(
    exim: Exim, exim_spool: Path, running_service: RunningService
) -> None:
    cold = VerificationService(running_service.store, running_service.rules)  # never started: no snapshot
    port = start_responder(running_service, cold)
    strict = exim_rcpt(exim, remote_exim(port, exim_spool, "sender/callout=10s"), "alice@example.ac.uk")
    assert strict.startswith("451 "), strict
    lenient = exim_rcpt(exim, remote_exim(port, exim_spool, "sender/callout=10s,defer_ok"), "alice@example.ac.uk")
    assert lenient == "250 Accepted", lenient
