"""The submission proxy's policy (seed 003, "Message submission"): aiosmtpd calls it, it calls the core.

Design invariant 7: without AUTH nothing is relayed (`530 5.7.0`, no open relay); AUTH only over
TLS; the sender must be the user's own (`plan.check_sender`, `553 5.7.1` with the reason). Then
invariant 1: the message is signed once, at MAIL FROM (`plan.MessageSigner`), and `transaction`
relays it before-queue, one upstream transaction per envelope sender, with the upstream's own
replies, over connections the handler keeps open a moment for the next transaction (`upstream_pool`,
[submission] upstream_reuse_seconds; `close` at shutdown). At DATA the proxy adds its Received:
header and, if configured, a DKIM signature on top.

The directory snapshot is the one the verification service reads (`gateway.directory`, shared in
`antiforgery serve`): a user opted in a second ago is signed at their next MAIL FROM. With no
snapshot loaded yet, MAIL gets `451 4.3.0` (invariant 6: never a guess).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import Envelope, Session

from signed_sender import Keyring, Policy, SigningError

from ..config import Config, parse_listen
from ..directory import Directory
from ..signed_cache import SignedCache
from .auth import Authenticator, AuthOutcome
from .connection import SubmissionEnvelope
from .dkim_sign import DkimSigner, header_from
from .esmtp import MailParams, RcptParams
from .limits import AuthThrottle, Limits
from .plan import MessageSigner, address_syntax, check_sender, owns
from .received import TLSInfo, received
from .session import SubmissionSMTP
from .tls import server_context
from .transaction import Transaction
from .upstream import Reply, Upstream
from .upstream_pool import UpstreamPool

log = logging.getLogger("antiforgery.submission")


def _not_login_data_notice(record: logging.LogRecord) -> bool:
    """aiosmtpd 1.4 warns at every successful AUTH that it set its own deprecated attribute: noise."""
    return "login_data is deprecated" not in record.getMessage()


logging.getLogger("mail.log").addFilter(_not_login_data_notice)


class SubmissionHandler:
    def __init__(
        self,
        directory: Directory,
        keyring: Keyring,
        policy: Policy,
        authenticator: Authenticator,
        *,
        upstream: tuple[str, int],
        hostname: str,
        limits: Limits | None = None,
        tls_context: ssl.SSLContext | None = None,
        allow_auth_without_tls_on_loopback: bool = False,
        upstream_timeout: float = 60.0,
        upstream_data_timeout: float = 600.0,
        upstream_reuse_seconds: float = 2.0,
        upstream_reuse_max_seconds: float = 300.0,
        upstream_reuse_max_idle: int = 10,
        dkim: DkimSigner | None = None,
        delimiters: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.keyring = keyring
        self.policy = policy
        self.authenticator = authenticator
        self.upstream = upstream
        self.hostname = hostname
        self.limits = limits or Limits()
        self.tls_context = tls_context
        self.allow_auth_without_tls_on_loopback = allow_auth_without_tls_on_loopback
        self.upstream_timeout = upstream_timeout
        self.upstream_data_timeout = upstream_data_timeout
        self.pool = (  # idle upstream connections (`upstream_pool`); None: a new one for every transaction
            UpstreamPool(
                idle_seconds=upstream_reuse_seconds,
                max_age=upstream_reuse_max_seconds,
                max_idle=upstream_reuse_max_idle,
            )
            if upstream_reuse_seconds > 0
            else None
        )
        self.dkim = dkim
        self.delimiters = delimiters or policy.separator
        self.clock = clock
        self.throttle = AuthThrottle(
            self.limits.auth_max_failures, self.limits.auth_lockout_seconds, self.limits.auth_failure_delay
        )
        self.signed = SignedCache(size=10_000)  # this hour's signed senders (`gateway.signed_cache`)
        self._background: set[asyncio.Task[None]] = set()

    # -- AUTH ------------------------------------------------------------------------------

    def throttle_locked(self, client: str) -> float:
        return self.throttle.locked(client, self.clock())

    async def authenticate(self, client: str, username: str, password: str) -> tuple[str | None, str | None]:
        """(reply to push instead of aiosmtpd's, canonical login on success); (None, None) is a 535."""
        result = await self.authenticator.authenticate(username, password, client)
        if result.outcome is AuthOutcome.OK and result.login:
            self.throttle.succeeded(client)
            log.info("auth ok client=%s login=%s", client, result.login)
            return None, result.login
        if result.outcome is AuthOutcome.UNAVAILABLE:
            log.warning("auth unavailable client=%s login=%s", client, username[:64])
            return "454 4.7.0 Temporary authentication failure; try again later", None
        delay = self.throttle.failed(client, self.clock())
        log.info("auth failed client=%s login=%r delay=%gs", client, username[:64], delay)
        await asyncio.sleep(delay)
        return None, None

    # -- aiosmtpd hooks ----------------------------------------------------------------------

    async def handle_EHLO(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        lines = [line for line in responses if not line.startswith("250-AUTH") or server.auth_allowed]
        return [*lines[:-1], "250-DSN", lines[-1]]

    async def handle_MAIL(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope, address: str, params: MailParams
    ) -> str:
        assert isinstance(envelope, SubmissionEnvelope) and server.login is not None
        snapshot = self.directory.snapshot
        if snapshot is None:
            return "451 4.3.0 The user directory is not loaded yet; try again later"
        sender = "" if address == "<>" else address
        problem = address_syntax(sender) if sender else None
        if problem is not None:
            log.info("sender refused login=%s reply=501 5.1.7 %s", server.login, problem)
            return f"501 5.1.7 Bad sender address syntax: {problem}"
        check = check_sender(server.login, sender, snapshot, self.policy, self.delimiters)
        if not check.ok or check.user is None:
            log.info("sender refused login=%s sender=<%s> reply=%d %s", server.login, sender, check.code, check.text)
            return f"{check.code} {check.enhanced} {check.text}"
        try:
            signer = MessageSigner(check.user, sender, snapshot, self.keyring, self.policy, self.clock(), self.signed)
        except SigningError as exc:
            return f"553 5.7.1 {sender} cannot be signed ({exc}); send from a shorter address"
        envelope.mail_from = sender
        envelope.transaction = Transaction(
            signer,
            params,
            self._open_upstream,
            hostname=self.hostname,
            data_timeout=self.upstream_data_timeout,
            now=self._now,
            pool=self.pool,
        )
        return f"250 2.1.0 Sender <{sender}> OK"

    async def handle_RCPT(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope, address: str, params: RcptParams
    ) -> str:
        assert isinstance(envelope, SubmissionEnvelope) and envelope.transaction is not None
        # RFC 5321 section 4.5.1: <postmaster> without a domain must be accepted; the upstream qualifies it.
        problem = None if address.lower() == "postmaster" else address_syntax(address)
        if problem is not None:
            log.info("recipient refused login=%s reply=501 5.1.3 %s", server.login, problem)
            return f"501 5.1.3 Bad recipient address syntax: {problem}"
        if len(envelope.rcpt_tos) >= self.limits.max_recipients:
            return f"452 4.5.3 Too many recipients: at most {self.limits.max_recipients}; send the rest separately"
        reply = await envelope.transaction.add_recipient(address, params)
        if reply.ok:
            envelope.rcpt_tos.append(address)
        return reply.for_client()

    async def handle_DATA(self, server: SubmissionSMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope, SubmissionEnvelope) and envelope.transaction is not None
        assert isinstance(envelope.content, bytes) and server.login is not None
        transaction = envelope.transaction
        transaction_id = secrets.token_hex(8).upper()
        message = self._trace(server, session, envelope, transaction_id) + envelope.content
        message = self._dkim(server.login, message) + message
        outcome = await transaction.deliver(message)
        log.info(
            "message id=%s login=%s sender=<%s> signed_as=%s recipients=%d accepted=%d reported=%d reply=%s",
            transaction_id,
            server.login,
            envelope.mail_from,
            ",".join(f"<{g}>" for g in transaction.groups),
            len(envelope.rcpt_tos),
            len(outcome.accepted),
            len(outcome.reported),
            str(outcome.reply).replace("\r\n", " ")[:200],
        )
        return outcome.reply.for_client()

    async def handle_RSET(self, server: SubmissionSMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 OK"

    async def handle_NOOP(self, server: SubmissionSMTP, session: Session, envelope: Envelope, arg: str) -> str:
        return "250 2.0.0 OK"

    async def handle_QUIT(self, server: SubmissionSMTP, session: Session, envelope: Envelope) -> str:
        return f"221 2.0.0 {self.hostname} closing connection"

    async def handle_VRFY(self, server: SubmissionSMTP, session: Session, envelope: Envelope, address: str) -> str:
        return "252 2.5.2 Cannot VRFY; send the message and the upstream will decide"

    async def handle_exception(self, error: Exception) -> str:
        """A bug must cost the client a retry, never a permanent failure (design invariant 6)."""
        log.error("submission error: %s", type(error).__name__, exc_info=error)
        return "451 4.3.0 Internal error; try again later"

    # -- pieces ----------------------------------------------------------------------------

    def _trace(self, server: SubmissionSMTP, session: Session, envelope: Envelope, transaction_id: str) -> bytes:
        tls = None
        if session.ssl:
            cipher = session.ssl.get("cipher") or ("unknown", "unknown", 0)
            ssl_object = session.ssl.get("ssl_object")
            version = ssl_object.version() if ssl_object is not None else cipher[1]
            tls = TLSInfo(str(version), str(cipher[0]), int(cipher[2] or 0))
        return received(
            helo=session.host_name,
            client_ip=server.client,
            hostname=self.hostname,
            tls=tls,
            authenticated=True,
            smtputf8=envelope.smtp_utf8,
            transaction_id=transaction_id,
            recipients=list(envelope.rcpt_tos),
            now=self._now(),
        )

    def _dkim(self, login: str, message: bytes) -> bytes:
        """The DKIM-Signature to prepend, or b"" (see `dkim_sign` for when we sign)."""
        snapshot = self.directory.snapshot
        if self.dkim is None or snapshot is None:
            return b""
        author = header_from(message)
        user = snapshot.user(snapshot.logins.get(login.lower()))
        if author is None or user is None or not owns(user, author, snapshot, self.delimiters):
            return b""
        return self.dkim.signature(message, author) or b""

    async def _open_upstream(self) -> Upstream | Reply:
        host, port = self.upstream
        return await Upstream.open(host, port, self.hostname, self.upstream_timeout)

    def _now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), dt.UTC).astimezone()

    def background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run cleanup (ending upstream transactions: RSET or close) without holding up the client."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- serving ---------------------------------------------------------------------------

    def protocol(self) -> SubmissionSMTP:
        return SubmissionSMTP(self, asyncio.get_running_loop())

    async def listen(self, host: str, port: int) -> asyncio.Server:
        """Serve on the running loop, the one the shared directory refreshes on."""
        server = await asyncio.get_running_loop().create_server(self.protocol, host, port, reuse_address=True)
        log.info("submission listening on %s", ", ".join(str(s.getsockname()) for s in server.sockets))
        return server

    async def close(self) -> None:
        """At shutdown, once the server stopped listening: finish the cleanups under way (they may
        hand connections back to the pool), then QUIT every idle upstream connection."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=5.0)
        if self.pool is not None:
            await self.pool.close()


def handler_from(
    config: Config, directory: Directory, keyring: Keyring, authenticator: Authenticator
) -> SubmissionHandler:
    """The proxy `antiforgery serve` starts from [submission]; TLSConfigError/DkimKeyError name a bad file."""
    submission = config.submission
    tls_context = None
    if submission.tls_cert_file:
        tls_context = server_context(Path(submission.tls_cert_file), Path(submission.tls_key_file))
    entries = submission.dkim_entries()
    return SubmissionHandler(
        directory,
        keyring,
        config.signing.policy(),
        authenticator,
        upstream=parse_listen(submission.upstream),
        hostname=submission.hostname or socket.getfqdn(),
        limits=Limits.from_config(submission),
        tls_context=tls_context,
        allow_auth_without_tls_on_loopback=submission.allow_auth_without_tls_on_loopback,
        upstream_timeout=submission.upstream_timeout,
        upstream_data_timeout=submission.upstream_data_timeout,
        upstream_reuse_seconds=submission.upstream_reuse_seconds,
        upstream_reuse_max_seconds=submission.upstream_reuse_max_seconds,
        upstream_reuse_max_idle=submission.upstream_reuse_max_idle,
        dkim=DkimSigner.from_entries(entries) if entries else None,
        delimiters=config.verification.recipient_delimiters,
    )
