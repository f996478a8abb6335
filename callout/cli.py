"""`antiforgery serve` and `antiforgery check`, contributed to the gateway's command line."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
from typing import Any

from gateway import snapshot
from gateway.cli.context import Context

from .decision import Request, decide
from .rules import rules_from


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the verification service (policy, socketmap, ...)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=cmd_serve)

    check = commands.add_parser("check", help="print the decision the service would take, and why")
    check.add_argument("--sender", required=True, help="envelope sender; '' for a bounce")
    check.add_argument("--recipient", default="", help="envelope recipient")
    check.add_argument("--at", type=int, metavar="UNIXTIME", help="decide as of this time (default: now)")
    check.set_defaults(handler=cmd_check)


def cmd_serve(ctx: Context, args: argparse.Namespace) -> int:
    from .serve import run

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config, _ = ctx.config, ctx.keyring  # fail fast, with one line, on a bad config or key file
    asyncio.run(run(config))
    return 0


def cmd_check(ctx: Context, args: argparse.Namespace) -> int:
    now = ctx.now()
    directory = snapshot.load(ctx.store.engine, dt.datetime.fromtimestamp(now, dt.UTC))
    decision = decide(Request(args.sender, args.recipient, now), directory, rules_from(ctx.config, ctx.keyring))
    ctx.say(f"{decision.action.value} {decision.reason}: {decision.text}")
    if decision.header:
        ctx.say(decision.header)
    return 0
