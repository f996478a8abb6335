"""`user`, `alias`, `domain` and `import`: who is protected, and by which addresses."""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import passwords
from ..store import Mode, StoreError
from .context import Context, UsageError

MODES = [m.value for m in Mode]


def register(commands: Any) -> None:
    user = commands.add_parser("user", help="add users, set their protection mode, list them")
    actions = user.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a user with their primary address")
    add.add_argument("login")
    add.add_argument("--address", required=True, help="the user's primary mail address")
    add.add_argument("--mode", choices=MODES, default="off")
    add.add_argument("--admin", action="store_true", help="may use the admin web pages")
    add.add_argument("--password-stdin", action="store_true", help="read a password from standard input")
    add.set_defaults(handler=cmd_user_add)
    mode = actions.add_parser("mode", help="set a user's protection: off, testing or full")
    mode.add_argument("login")
    mode.add_argument("mode", choices=MODES)
    mode.set_defaults(handler=cmd_user_mode)
    actions.add_parser("list", help="list users and their modes").set_defaults(handler=cmd_user_list)
    passwd = actions.add_parser("passwd", help="set a user's password, read from standard input")
    passwd.add_argument("login")
    passwd.set_defaults(handler=cmd_user_passwd)
    address = actions.add_parser("address", help="give a user another address of their own")
    address.add_argument("login")
    address.add_argument("address")
    address.set_defaults(handler=cmd_user_address)

    alias = commands.add_parser("alias", help="aliases: one target is protected like its user")
    actions = alias.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add an alias; a target is a user login or an address")
    add.add_argument("alias")
    add.add_argument("targets", nargs="+", metavar="TARGET")
    add.set_defaults(handler=cmd_alias_add)
    actions.add_parser("list", help="list aliases and their targets").set_defaults(handler=cmd_alias_list)

    domain = commands.add_parser("domain", help="managed mail domains")
    actions = domain.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a managed mail domain")
    add.add_argument("name")
    add.add_argument("--description", default="")
    add.set_defaults(handler=cmd_domain_add)
    actions.add_parser("list", help="list managed mail domains").set_defaults(handler=cmd_domain_list)

    importer = commands.add_parser("import", help="add users from a CSV file (login,address[,mode][,addresses])")
    importer.add_argument("csv_file", type=Path, help="CSV with a header row; '-' for standard input")
    importer.set_defaults(handler=cmd_import)


def _read_password(ctx: Context) -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise UsageError("no password on standard input")
    return password


def cmd_user_add(ctx: Context, args: argparse.Namespace) -> int:
    password_hash = passwords.hash_password(_read_password(ctx)) if args.password_stdin else None
    user = ctx.store.add_user(
        args.login, args.address, mode=Mode(args.mode), password_hash=password_hash, is_admin=args.admin
    )
    ctx.say(f"added {user.login} <{user.primary_address}> mode {user.mode.value}")
    return 0


def cmd_user_mode(ctx: Context, args: argparse.Namespace) -> int:
    ctx.store.set_mode(args.login, Mode(args.mode))
    ctx.say(f"{args.login}: mode {args.mode}")
    return 0


def cmd_user_passwd(ctx: Context, args: argparse.Namespace) -> int:
    ctx.store.set_password_hash(args.login, passwords.hash_password(_read_password(ctx)))
    ctx.say(f"{args.login}: password set")
    return 0


def cmd_user_address(ctx: Context, args: argparse.Namespace) -> int:
    ctx.store.add_address(args.login, args.address)
    ctx.say(f"{args.login}: added address {args.address.lower()}")
    return 0


def cmd_user_list(ctx: Context, args: argparse.Namespace) -> int:
    rows = ctx.store.list_users()
    width = max([len(u.login) for u in rows] + [5])
    ctx.say(f"{'login':<{width}}  {'mode':<7}  address")
    for user in rows:
        flag = "  (admin)" if user.is_admin else ""
        ctx.say(f"{user.login:<{width}}  {user.mode.value:<7}  {user.primary_address}{flag}")
    return 0


def cmd_alias_add(ctx: Context, args: argparse.Namespace) -> int:
    alias = ctx.store.add_alias(args.alias, args.targets)
    kind = "protected like its user" if len(args.targets) == 1 else "multi-target, not checked further"
    ctx.say(f"added alias {alias.address} -> {', '.join(args.targets)} ({kind})")
    return 0


def cmd_alias_list(ctx: Context, args: argparse.Namespace) -> int:
    for alias in ctx.store.list_aliases():
        ctx.say(f"{alias.address} -> {', '.join(alias.targets)}")
    return 0


def cmd_domain_add(ctx: Context, args: argparse.Namespace) -> int:
    domain = ctx.store.add_domain(args.name, args.description)
    ctx.say(f"added managed domain {domain.name}")
    return 0


def cmd_domain_list(ctx: Context, args: argparse.Namespace) -> int:
    for domain in ctx.store.list_domains():
        ctx.say(f"{domain.name}  {domain.description}".rstrip())
    return 0


def _rows(handle: Any) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.DictReader(handle)
    fields = set(reader.fieldnames or [])
    missing = {"login", "address"} - fields
    if missing:
        raise UsageError(f"CSV header must name the columns login and address (missing: {', '.join(sorted(missing))})")
    unknown = fields - {"login", "address", "mode", "addresses"}
    if unknown:
        raise UsageError(f"unknown CSV column(s): {', '.join(sorted(unknown))}")
    for row in reader:
        yield reader.line_num, {k: (v or "").strip() for k, v in row.items() if k is not None}


def _count_lines(path: Path) -> int | None:
    if str(path) == "-":
        return None
    with path.open("rb") as handle:
        return max(0, sum(1 for _ in handle) - 1)


def cmd_import(ctx: Context, args: argparse.Namespace) -> int:
    """Import users; bad rows are reported by line and skipped, and the exit status says so."""
    path: Path = args.csv_file
    total = _count_lines(path)
    handle = sys.stdin if str(path) == "-" else path.open(newline="", encoding="utf-8")
    imported, skipped = 0, 0
    with handle, tqdm(total=total, unit="user", file=ctx.err, disable=None) as progress:
        for line, row in _rows(handle):
            progress.update(1)
            try:
                mode = Mode(row.get("mode") or "off")
            except ValueError:
                progress.write(f"line {line}: mode must be one of {', '.join(MODES)}", file=ctx.err)
                skipped += 1
                continue
            try:
                ctx.store.add_user(row["login"], row["address"], mode=mode)
                for extra in row.get("addresses", "").split():
                    ctx.store.add_address(row["login"], extra)
            except StoreError as exc:
                progress.write(f"line {line}: {exc}", file=ctx.err)
                skipped += 1
                continue
            imported += 1
    ctx.say(f"imported {imported} user(s), skipped {skipped}")
    return 2 if skipped else 0
