"""`sign`, `verify` and `blacklist`: what a postmaster needs to debug and contain a tag."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from signed_sender import sign, sign_fixed, sign_prvs

from ..leaks import LeakRefused, blacklist_leak
from ..tagcheck import check_address
from .context import Context, UsageError


def register(commands: Any) -> None:
    signer = commands.add_parser("sign", help="print the signed form of an address")
    signer.add_argument("address")
    signer.add_argument("--at", type=int, metavar="UNIXTIME", help="sign as of this time (default: now)")
    signer.add_argument("--recipient", help="make the fixed tag for mail from ADDRESS to this recipient")
    signer.add_argument("--format", choices=["native", "prvs"], default="native")
    signer.set_defaults(handler=cmd_sign)

    checker = commands.add_parser("verify", help="print 'valid' or 'invalid: REASON' (exit 0 or 1)")
    checker.add_argument("address")
    checker.add_argument("--at", type=int, metavar="UNIXTIME", help="verify as of this time (default: now)")
    checker.set_defaults(handler=cmd_verify)

    fixed = commands.add_parser("fixed", help="fixed tags for recipients that need a constant sender")
    actions = fixed.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list fixed tags and the address to subscribe with")
    listing.add_argument("--user", help="only this user's")
    listing.add_argument("--all", action="store_true", help="include revoked tags")
    listing.set_defaults(handler=cmd_fixed_list)
    revoke = actions.add_parser("revoke", help="revoke a fixed tag: its address stops verifying")
    revoke.add_argument("fixed_id", type=int)
    revoke.set_defaults(handler=cmd_fixed_revoke)

    blacklist = commands.add_parser("blacklist", help="leaked tags that must no longer verify")
    actions = blacklist.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="blacklist a leaked signed address until it expires")
    add.add_argument("signed_address")
    add.add_argument("--reason", default="reported as leaked")
    add.set_defaults(handler=cmd_blacklist_add)
    add.add_argument("--at", type=int, metavar="UNIXTIME", help="as of this time (default: now)")
    actions.add_parser("list", help="list blacklisted tags").set_defaults(handler=cmd_blacklist_list)
    purge = actions.add_parser("purge", help="drop entries whose tags have expired")
    purge.add_argument("--at", type=int, metavar="UNIXTIME", help="as of this time (default: now)")
    purge.set_defaults(handler=cmd_blacklist_purge)


def cmd_sign(ctx: Context, args: argparse.Namespace) -> int:
    if args.recipient and args.format == "prvs":
        raise UsageError("--recipient makes a native fixed tag; it cannot be combined with --format prvs")
    if args.recipient:
        fixed = ctx.store.add_fixed_tag_for_address(args.address, args.recipient)
        ctx.say(sign_fixed(args.address, fixed.id, ctx.keyring, ctx.policy))
    elif args.format == "prvs":
        ctx.say(sign_prvs(args.address, ctx.keyring, ctx.now()))
    else:
        ctx.say(sign(args.address, ctx.keyring, ctx.now(), ctx.policy))
    return 0


def cmd_verify(ctx: Context, args: argparse.Namespace) -> int:
    result = check_address(args.address, ctx.keyring, ctx.now(), ctx.policy, ctx.store)
    ctx.say("valid" if result.ok else f"invalid: {result.reason}")
    return 0 if result.ok else 1


def cmd_fixed_list(ctx: Context, args: argparse.Namespace) -> int:
    addresses: dict[str, str] = {}
    for tag in ctx.store.list_fixed_tags(args.user, include_revoked=args.all):
        if tag.login not in addresses:
            addresses[tag.login] = ctx.store.get_user(tag.login).primary_address
        signed = sign_fixed(addresses[tag.login], tag.id, ctx.keyring, ctx.policy)
        state = "active" if tag.active else f"revoked {tag.revoked_at:%Y-%m-%d}"
        ctx.say(f"{tag.id:>6}  {tag.login}  {tag.recipient}  {signed}  {state}")
    return 0


def cmd_fixed_revoke(ctx: Context, args: argparse.Namespace) -> int:
    tag = ctx.store.revoke_fixed_tag(args.fixed_id)
    ctx.say(f"revoked fixed tag {tag.id} of {tag.login} for {tag.recipient}")
    return 0


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def cmd_blacklist_add(ctx: Context, args: argparse.Namespace) -> int:
    try:
        report = blacklist_leak(ctx.store, args.signed_address, ctx.keyring, ctx.now(), ctx.policy, args.reason)
    except LeakRefused as exc:
        raise UsageError(str(exc)) from None
    if not report.blacklisted or report.expires_at is None:
        ctx.say(f"{args.signed_address} has already expired; nothing to do")
        return 0
    ctx.say(f"blacklisted {report.signed_address} until {report.expires_at:%Y-%m-%d %H:%M} UTC")
    return 0


def cmd_blacklist_list(ctx: Context, args: argparse.Namespace) -> int:
    for entry in ctx.store.blacklist_list():
        ctx.say(f"{entry.signed_address}  until {entry.expires_at:%Y-%m-%d %H:%M} UTC  {entry.reason}")
    return 0


def cmd_blacklist_purge(ctx: Context, args: argparse.Namespace) -> int:
    count = ctx.store.blacklist_purge(_utc(ctx.now()))
    ctx.say(f"purged {count} expired entr{'y' if count == 1 else 'ies'}")
    return 0
