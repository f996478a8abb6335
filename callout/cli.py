"""`antiforgery serve`, `check` and `callout`, contributed to the gateway's command line."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
from typing import Any

from gateway import eventloop, snapshot
from gateway.cli.context import Context, UsageError
from gateway.config import parse_listen

from .decision import Request, decide
from .rules import rules_from


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the verification service (policy, socketmap, ...)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--event-loop",
        default=eventloop.DEFAULT,
        choices=eventloop.LOOPS,
        help=f"asyncio event loop to run on (default: {eventloop.DEFAULT}; see gateway/eventloop.py)",
    )
    serve.set_defaults(handler=cmd_serve)

    check = commands.add_parser("check", help="print the decision the service would take, and why")
    check.add_argument("--sender", required=True, help="envelope sender; '' for a bounce")
    check.add_argument("--recipient", default="", help="envelope recipient")
    check.add_argument("--at", type=int, metavar="UNIXTIME", help="decide as of this time (default: now)")
    check.set_defaults(handler=cmd_check)

    callout = commands.add_parser(
        "callout",
        help="ask an address's own mail server about it (call-forward verification)",
        description="Exit status: 0 positive, 1 negative, 2 temporary or bad input.",
    )
    callout.add_argument("address")
    callout.add_argument("--route", metavar="HOST:PORT", help="call this server, not the configured route or MX")
    callout.add_argument("--timeout", type=float, metavar="SECONDS", help="default: [verification] callout_timeout")
    callout.set_defaults(handler=cmd_callout)


def cmd_serve(ctx: Context, args: argparse.Namespace) -> int:
    from .serve import run

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.log_level != "debug":
        # aiosmtpd logs every command line of every SMTP session at INFO ("mail.log"): two lines per
        # callout command, a fifth of the responder's CPU (issue 7). Our own lines say what matters.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    config, _ = ctx.config, ctx.keyring  # fail fast, with one line, on a bad config or key file
    try:
        factory = eventloop.loop_factory(args.event_loop)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    logging.getLogger("antiforgery.serve").info("running on the %s event loop", args.event_loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run(config))
    return 0


def cmd_check(ctx: Context, args: argparse.Namespace) -> int:
    now = ctx.now()
    directory = snapshot.load(ctx.store.engine, dt.datetime.fromtimestamp(now, dt.UTC))
    decision = decide(Request(args.sender, args.recipient, now), directory, rules_from(ctx.config, ctx.keyring))
    ctx.say(f"{decision.action.value} {decision.reason}: {decision.text}")
    if decision.header:
        ctx.say(decision.header)
    return 0


def cmd_callout(ctx: Context, args: argparse.Namespace) -> int:
    """Print `positive`, `negative: <reply>` or `temporary: <why>`; exit 0, 1 or 2."""
    from .callout_client import Outcome, checked_address
    from .forward import client_from

    try:
        address = checked_address(args.address)
        route = parse_listen(args.route) if args.route else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    client = client_from(ctx.config)
    if route is not None:
        client.routes[address.rpartition("@")[2].lower()] = route
    if args.timeout is not None:
        client.timeout = args.timeout
    result = asyncio.run(client.verify(address))
    ctx.say("positive" if result.outcome is Outcome.POSITIVE else f"{result.outcome.value}: {result.detail}")
    return {Outcome.POSITIVE: 0, Outcome.NEGATIVE: 1, Outcome.TEMPORARY: 2}[result.outcome]
