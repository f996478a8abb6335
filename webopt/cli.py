"""`antiforgery web`: the opt-in pages on werkzeug's development server.

For trying the pages out and for tests only. Production runs the same application under a WSGI
server behind the site's HTTPS front end, e.g.
`gunicorn --workers 2 --bind 127.0.0.1:8080 'webopt:from_file("/etc/antiforgery/antiforgery.toml")'`.
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.context import Context, UsageError
from gateway.config import parse_listen


def register(commands: Any) -> None:
    web = commands.add_parser("web", help="serve the opt-in web pages (development server)")
    web.add_argument("--listen", metavar="HOST:PORT", help="default: [web] listen")
    web.set_defaults(handler=cmd_web)


def cmd_web(ctx: Context, args: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

    from . import create_app
    from .secret import SecretFileError

    try:
        host, port = parse_listen(args.listen or ctx.config.web.listen)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        app = create_app(ctx.config)
    except SecretFileError as exc:
        raise UsageError(str(exc)) from None
    _ = ctx.keyring  # fail now, with one line, on a bad key file
    server = make_server(host, port, app, threaded=True)
    ctx.say(f"serving the opt-in pages on http://{host}:{server.server_port}/ (development server; see README)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
