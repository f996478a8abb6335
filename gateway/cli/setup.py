"""`init` and `keys`: creating a site and rotating its secrets."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import socket
from pathlib import Path
from typing import Any

from .. import config, keyfile
from ..store import Store
from ..submission import tls
from .context import Context, UsageError

#: Where `init --self-signed-cert` puts the pair, relative to the configuration file.
TLS_FILES = ("tls.crt", "tls.key")


def register(commands: Any) -> None:
    init = commands.add_parser("init", help="create the configuration, the key file and the database")
    init.add_argument("--domain", action="append", default=[], help="a mail domain of this site (repeatable)")
    init.add_argument("--store-url", default="sqlite:///antiforgery.db", help="SQLAlchemy URL of the store")
    init.add_argument(
        "--self-signed-cert",
        nargs="?",
        const="",
        metavar="HOSTNAME",
        help="make a self-signed STARTTLS certificate for the submission proxy (tests, first start); "
        "HOSTNAME defaults to this host's FQDN",
    )
    init.set_defaults(handler=cmd_init)

    keys = commands.add_parser("keys", help="list or rotate the signing keys")
    actions = keys.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="show key ids, ages and which key signs").set_defaults(handler=cmd_keys_list)
    rotate = actions.add_parser("rotate", help="add a new signing key; old keys keep verifying")
    rotate.set_defaults(handler=cmd_keys_rotate)
    retire = actions.add_parser("retire", help="remove an old key: tags it made stop verifying")
    retire.add_argument("key_id", type=int)
    retire.set_defaults(handler=cmd_keys_retire)


def cmd_init(ctx: Context, args: argparse.Namespace) -> int:
    path = ctx.config_path
    if path.exists():
        ctx.say(f"configuration {path} exists; keeping it")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        tls_files = TLS_FILES if args.self_signed_cert is not None else ("", "")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(config.template([d.lower() for d in args.domain], args.store_url, tls_files))
        ctx.say(f"wrote configuration {path}")
        if not args.domain:
            ctx.say("note: no mail domains given; list them under [site] domains")
    key_path = ctx.config.signing.key_file
    if key_path.exists():
        keyfile.load(key_path)  # refuse a key file others can read, even when keeping it
        ctx.say(f"key file {key_path} exists; keeping it")
    else:
        keyfile.create(key_path, int(ctx.now()))
        ctx.say(f"wrote key file {key_path} (mode 0600)")
    web_secret = ctx.config.web.secret_key_file
    if not web_secret.exists():
        _write_private(web_secret, secrets.token_hex(32) + "\n")
        ctx.say(f"wrote web session secret {web_secret} (mode 0600)")
    if args.self_signed_cert is not None:
        _self_signed_cert(ctx, args.self_signed_cert or socket.getfqdn())
    revision = Store.upgrade(ctx.config.store.url)
    _restrict_sqlite_file(ctx.config.store.url)
    ctx.say(f"database is at schema revision {revision}")
    return 0


def _self_signed_cert(ctx: Context, hostname: str) -> None:
    """A certificate and key for [submission] (where configured, else tls.crt and tls.key beside the config)."""
    submission = ctx.config.submission
    base = ctx.config_path.parent
    cert = Path(submission.tls_cert_file or base / TLS_FILES[0])
    key = Path(submission.tls_key_file or base / TLS_FILES[1])
    if cert.exists() or key.exists():
        ctx.say(f"certificate {cert} or key {key} exists; keeping them")
    else:
        tls.make_self_signed(cert, key, hostname, dt.datetime.fromtimestamp(ctx.now(), dt.UTC))
        ctx.say(f"wrote self-signed certificate {cert} for {hostname} and its key {key} (mode 0600)")
    if not submission.tls_cert_file:
        ctx.say(f'note: set [submission] tls_cert_file = "{cert}" and tls_key_file = "{key}" to use them')


def _write_private(path: Path, text: str) -> None:
    """A new secret file only its owner can read; an existing file is never overwritten."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(text)


def _restrict_sqlite_file(url: str) -> None:
    """The database holds password hashes: an embedded SQLite file is readable by its owner only."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and url != prefix + ":memory:":
        path = Path(url[len(prefix) :].split("?", 1)[0])
        if path.exists():
            path.chmod(0o600)


def _age(ctx: Context, created: int) -> str:
    if not created:
        return "unknown"
    return f"{max(0, int(ctx.now()) - created) // 86400}d"


def cmd_keys_list(ctx: Context, args: argparse.Namespace) -> int:
    ring = ctx.keyring
    ctx.say(f"{'id':>3}  {'created (UTC)':<20} {'age':>6}  role")
    for key_id in ring:
        key = ring[key_id]
        created = dt.datetime.fromtimestamp(key.created, dt.UTC).strftime("%Y-%m-%d %H:%M") if key.created else "-"
        role = "signs and verifies" if key_id == ring.current.id else "verifies"
        if key_id > 9:
            role += " (native only; BATV key numbers are 0-9)"
        ctx.say(f"{key_id:>3}  {created:<20} {_age(ctx, key.created):>6}  {role}")
    return 0


def cmd_keys_rotate(ctx: Context, args: argparse.Namespace) -> int:
    ring = ctx.keyring.rotated(keyfile.new_secret(), int(ctx.now()))
    keyfile.save(ctx.config.signing.key_file, ring)
    ctx.say(f"key {ring.current.id} now signs; {len(ring) - 1} older key(s) still verify")
    ctx.say("copy the key file to every node before the new key is used for signing there")
    return 0


def cmd_keys_retire(ctx: Context, args: argparse.Namespace) -> int:
    ring = ctx.keyring
    if args.key_id not in ring:
        raise UsageError(f"no key with id {args.key_id}")
    keyfile.save(ctx.config.signing.key_file, ring.without(args.key_id))
    ctx.say(f"key {args.key_id} retired; tags it made no longer verify")
    return 0
