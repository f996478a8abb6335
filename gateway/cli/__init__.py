"""`antiforgery`: the postmaster's command line.

Every failure a user can cause ends in one line on stderr and exit status 2, never a traceback:
a postmaster scripting imports or key rotation must be able to tell "bad input" from "crashed".
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import SQLAlchemyError

from signed_sender import KeyringError, SigningError

from ..config import DEFAULT_PATH, ConfigError
from ..keyfile import KeyFileError
from ..store import StoreError
from . import local, setup, tags, users
from .context import Context, UsageError

Handler = Callable[[Context, argparse.Namespace], int]

EXIT_OK, EXIT_NO, EXIT_USAGE, EXIT_SOFTWARE = 0, 1, 2, 70  # sysexits.h EX_SOFTWARE


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="antiforgery", description="Anti-forgery gateway: signed envelope senders.")
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(os.environ.get("ANTIFORGERY_CONFIG", DEFAULT_PATH)),
        help=f"configuration file (default: $ANTIFORGERY_CONFIG or {DEFAULT_PATH})",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    setup.register(commands)
    users.register(commands)
    tags.register(commands)
    local.register(commands)
    # Services built on the gateway (callout, webopt) add their commands through an entry-point
    # group, so that this package never imports them (STYLE principle 1: no import cycles).
    for entry in sorted(entry_points(group="antiforgery.commands"), key=lambda e: e.name):
        entry.load()(commands)
    return parser


def _fail(err: TextIO, message: str) -> int:
    print(f"antiforgery: error: {message}", file=err)
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = build_parser().parse_args(argv)
    ctx = Context(config_path=args.config, out=out, err=err, clock=getattr(args, "at", None))
    handler: Handler = args.handler
    try:
        return handler(ctx, args)
    except (ConfigError, KeyFileError, StoreError, SigningError, KeyringError, UsageError) as exc:
        return _fail(err, str(exc))
    except SQLAlchemyError as exc:
        # Connection strings may hold passwords: name the failure, not the URL.
        detail = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        return _fail(err, f"database error: {detail}")
    except OSError as exc:
        return _fail(err, f"{exc.filename or ''}: {exc.strerror}".lstrip(": "))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, with the details only when asked for
        if os.environ.get("ANTIFORGERY_DEBUG"):
            raise
        print(
            f"antiforgery: internal error: {type(exc).__name__}: {exc} (set ANTIFORGERY_DEBUG=1 for details)",
            file=err,
        )
        return EXIT_SOFTWARE
    finally:
        ctx.close()


if __name__ == "__main__":
    sys.exit(main())
