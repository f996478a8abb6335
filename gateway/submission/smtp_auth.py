"""The AUTH command (RFC 4954) of `session.SubmissionSMTP`: who may authenticate, and who did.

Design invariant 7 allows AUTH only over TLS. aiosmtpd 1.4's own check (`auth_require_tls`) knows
no loopback exemption and its mechanisms call a synchronous callback, so AUTH is done here:

  - AUTH only inside TLS, or from loopback if `allow_auth_without_tls_on_loopback`; else `530 5.7.0
    Must issue a STARTTLS command first` (RFC 3207 section 4), and EHLO lists AUTH only when it may
    be used (`auth_allowed`, read by `proxy.SubmissionHandler.handle_EHLO`);
  - not inside a mail transaction (RFC 4954 section 4: 503);
  - PLAIN and LOGIN check through the asynchronous `Authenticator` and the throttle (aiosmtpd's
    call a synchronous callback), with the idle timer paused while the password is checked.

This reaches into aiosmtpd's protected `_tls_protocol`, unchanged through the 1.4 releases; the
tests cover its use.
"""

from __future__ import annotations

import contextlib
import ipaddress
from base64 import b64decode
from typing import Any

from aiosmtpd.smtp import AuthResult

from .connection import SubmissionConnection


class AuthenticatingConnection(SubmissionConnection):
    """The session's limits (`connection`) with AUTH: PLAIN and LOGIN, and the login they give."""

    @property
    def auth_allowed(self) -> bool:
        if self._tls_protocol is not None:
            return True
        if not self.handler.allow_auth_without_tls_on_loopback:
            return False
        with contextlib.suppress(ValueError):
            return ipaddress.ip_address(self.client.split("%", 1)[0]).is_loopback
        return False

    @property
    def login(self) -> str | None:
        data: Any = self.session.auth_data if self.session and self.session.authenticated else None
        return data if isinstance(data, str) else None

    async def smtp_AUTH(self, arg: str) -> None:
        if not self.auth_allowed:
            await self.push("530 5.7.0 Must issue a STARTTLS command first")
            return
        if self.envelope is not None and self.envelope.mail_from is not None:
            await self.push("503 5.5.1 AUTH is not allowed during a mail transaction")
            return
        locked = self.handler.throttle_locked(self.client)
        if locked:
            await self.push(f"454 4.7.0 Too many failed logins from {self.client}; try again in {int(locked) + 1}s")
            return
        await super().smtp_AUTH(arg)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        response = await self._auth_response(args, "")
        if response is None:
            return AuthResult(success=False, handled=True)
        parts = response.split(b"\x00")
        if len(parts) != 3 or (parts[0] and parts[0] != parts[1]):  # RFC 4616; no acting for others
            await self.push("501 5.5.2 Cannot decode the PLAIN response")
            return AuthResult(success=False, handled=True)
        return await self._check(parts[1], parts[2])

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        login = await self._auth_response(args, "Username:")
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self._auth_response([args[0]], "Password:")
        if password is None:
            return AuthResult(success=False, handled=True)
        return await self._check(login, password)

    async def _auth_response(self, args: list[str], challenge: str) -> bytes | None:
        """The initial response if given (RFC 4954 section 4), else the answer to a 334 challenge."""
        if len(args) > 1:
            try:
                return b64decode(args[1].encode("ascii"), validate=True) if args[1] != "=" else b""
            except ValueError:
                await self.push("501 5.5.2 Cannot decode base64")
                return None
        answer = await self.challenge_auth(challenge)
        return answer if isinstance(answer, bytes) else None  # challenge_auth already answered "*"

    async def _check(self, login: bytes, password: bytes) -> AuthResult:
        try:
            username, secret = login.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            username, secret = "", ""
        async with self.busy():
            reply, canonical = await self.handler.authenticate(self.client, username, secret)
        if canonical is not None:
            return AuthResult(success=True, auth_data=canonical)
        if reply is not None:
            await self.push(reply)
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)  # aiosmtpd answers 535 5.7.8
