"""`antiforgery sendmail`: local submission for programs on this host (seed 003, "Satellite systems").

The Unix user who runs the command is the submitter: the real uid's login name, or the gateway
login `[local] users` maps it to ("root=postmaster"). Like the submission proxy, it may use only
its own addresses as envelope sender (design invariant 7): `-f` is taken when `check_sender`
allows it, otherwise the user's primary address is used instead. An opted-in user's sender is
signed once for the message, with fixed tags per recipient (invariant 1), and the message is
handed to `[local] upstream` by SMTP, one transaction per envelope sender.

The sendmail flags are parsed by hand (gateway.submission.sendmail_args): argparse cannot read
`-oi` or `-falice@x`. Exit statuses are sysexits.h, not the CLI's usual 2, because callers of
sendmail act on them: 75 means "keep the message and try again". Configuration, key file or
store problems are 75 too: the postmaster can fix them, and the message must not be dropped.
Nothing is 0 unless the upstream accepted every recipient. The caller must run this command as
a user who can read the configuration, the key file and the store (see docs/local-submission.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import pwd
import sys
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from signed_sender import KeyringError

from .. import snapshot
from ..config import ConfigError, parse_listen
from ..keyfile import KeyFileError
from ..store import StoreError
from ..submission.plan import MessageSigner, SigningError, check_sender
from ..submission.sendmail_args import Invocation, SendmailError, Sysexit, parse_args
from ..submission.sendmail_message import (
    complete,
    header_recipients,
    parse_recipients,
    read_message,
    remove_blind,
)
from ..submission.sendmail_relay import Upstream, deliver, group_by_sender
from .context import Context

log = logging.getLogger("antiforgery.sendmail")


def register(commands: Any) -> None:
    sendmail = commands.add_parser(
        "sendmail",
        help="submit a message on stdin like sendmail(8); signed for opted-in users",
        description="sendmail [-t] [-i|-oi] [-f sender] [-F full name] [recipient ...] < message",
        add_help=False,
        prefix_chars="\0",  # every argument goes to the sendmail parser, including -h and -f
    )
    sendmail.add_argument("sendmail_args", nargs=argparse.REMAINDER)
    sendmail.set_defaults(handler=cmd_sendmail)


def unix_user() -> pwd.struct_passwd:
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid)
    except KeyError:
        raise SendmailError(Sysexit.NOUSER, f"uid {uid} has no passwd entry") from None


def recipients_of(invocation: Invocation, header_rcpts: list[str]) -> list[str]:
    """Arguments first, then (with -t) the header's; each address once, compared case-insensitively."""
    found = parse_recipients(list(invocation.recipients), "recipient") + header_rcpts
    unique: dict[str, str] = {}
    for address in found:
        unique.setdefault(address.lower(), address)
    if not unique:
        if invocation.extract_recipients:
            raise SendmailError(Sysexit.DATAERR, "no recipient addresses found in the message header (-t)")
        raise SendmailError(Sysexit.USAGE, "no recipients given; name them as arguments, or use -t")
    return list(unique.values())


def submit(ctx: Context, invocation: Invocation, data: bytes) -> None:
    """Everything between reading stdin and the upstream's last 250; SendmailError on any failure."""
    account = unix_user()
    login = ctx.config.local.user_map().get(account.pw_name, account.pw_name).lower()
    message = read_message(data, invocation.ignore_dots)
    recipients = recipients_of(invocation, header_recipients(message) if invocation.extract_recipients else [])
    now = ctx.now()
    directory = snapshot.load(ctx.store.engine, dt.datetime.fromtimestamp(now, dt.UTC))
    user = directory.user(directory.logins.get(login))
    if user is None:
        raise SendmailError(
            Sysexit.NOUSER,
            f"Unix user {account.pw_name} (login {login}) has no gateway account; "
            "the postmaster can map it to one in [local] users",
        )
    policy = ctx.policy
    sender = user.primary_address
    if invocation.sender is not None:
        wanted = invocation.sender.strip().removeprefix("<").removesuffix(">")
        delimiters = ctx.config.verification.recipient_delimiters or policy.separator
        if check_sender(login, wanted, directory, policy, delimiters).ok:
            sender = wanted
    try:
        signer = MessageSigner(user, sender, directory, ctx.keyring, policy, now)
    except SigningError as exc:
        raise SendmailError(Sysexit.DATAERR, f"sender {sender} cannot be signed: {exc}") from None
    senders = {recipient: signer.sender_for(recipient) for recipient in recipients}
    remove_blind(message)
    full_name = invocation.full_name if invocation.full_name is not None else account.pw_gecos.split(",")[0]
    complete(message, sender or user.primary_address, full_name, now)
    local = ctx.config.local
    host, port = parse_listen(local.upstream)
    deliver(Upstream(host, port, local.hostname, local.timeout), group_by_sender(senders), message.to_bytes())
    log.info(
        "sendmail unix=%s login=%s sender=%s recipients=%d signed=%s",
        account.pw_name,
        login,
        sender,
        len(recipients),
        signer.signs,
    )


def cmd_sendmail(ctx: Context, args: argparse.Namespace) -> int:
    try:
        invocation = parse_args(list(args.sendmail_args))
        submit(ctx, invocation, sys.stdin.buffer.read())
        return Sysexit.OK
    except SendmailError as exc:
        status, message = exc.status, str(exc)
    except (ConfigError, KeyFileError, KeyringError, StoreError) as exc:
        status, message = Sysexit.TEMPFAIL, f"{exc}; try again later"
    except SQLAlchemyError as exc:  # the URL may hold a password: name the failure only
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        status, message = Sysexit.TEMPFAIL, f"store unavailable ({detail}); try again later"
    except OSError as exc:
        status, message = Sysexit.TEMPFAIL, f"{exc.filename or ''}: {exc.strerror}; try again later".lstrip(": ")
    except Exception as exc:  # a bug: still one line, and the message is not claimed
        if os.environ.get("ANTIFORGERY_DEBUG"):
            raise
        status, message = Sysexit.SOFTWARE, f"internal error: {type(exc).__name__}: {exc} (message not sent)"
    print(f"antiforgery sendmail: {message}", file=ctx.err)
    return status

