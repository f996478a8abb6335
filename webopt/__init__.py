"""webopt: the opt-in web pages. Users choose their forgery protection; postmasters watch.

`create_app(config, test_config)` is the application factory (as in Flask's tutorial); the
`auth`, `user` and `admin` blueprints hold the pages. Nothing else in the project imports this
package (STYLE principle 1): it works through the store like the CLI, and the verification
service picks changes up from the store within seconds (snapshot refresh), without a restart.

Production runs it under a WSGI server, e.g.::

    gunicorn --workers 2 --bind 127.0.0.1:8080 'webopt:from_file("/etc/antiforgery/antiforgery.toml")'
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, g, request
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway import config as gateway_config
from gateway.config import Config

from . import admin, auth, errors, user
from .forms import ActionForm
from .secret import load_secret
from .services import Services, install
from .throttle import LoginThrottle

#: Enough for every form here; a bigger body is refused (413) before it is parsed.
MAX_BODY = 16 * 1024

#: Everything comes from this site; inline SVG charts need no script and no inline style.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)


def create_app(config: Config | None = None, test_config: Mapping[str, Any] | None = None) -> Flask:
    """The application for `config` (default: every setting at its default, relative to the working
    directory). `test_config` overrides Flask settings; with SECRET_KEY in it, no secret file is read,
    and ANTIFORGERY_CLOCK (a function returning Unix seconds) replaces the wall clock."""
    config = config if config is not None else Config(path=Path("antiforgery.toml"))
    web = config.web
    app = Flask(__name__)
    app.config.from_mapping(
        SESSION_COOKIE_NAME="antiforgery_session",
        SESSION_COOKIE_SECURE=web.secure_cookies,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(seconds=web.session_seconds),
        WTF_CSRF_TIME_LIMIT=int(web.session_seconds),
        MAX_CONTENT_LENGTH=MAX_BODY,
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = load_secret(web.secret_key_file)
    clock = app.config.get("ANTIFORGERY_CLOCK") or time.time
    install(app, Services(config, LoginThrottle(web.login_max_failures, web.login_lockout_seconds), clock))
    if web.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=web.proxy_hops, x_proto=web.proxy_hops)  # type: ignore[method-assign]

    @app.before_request
    def query_is_utf8() -> None:
        # werkzeug decodes the raw query as strict UTF-8 wherever it is read (request.args,
        # request.full_path): other octets would end in a UnicodeDecodeError, a 500 page.
        try:
            request.query_string.decode("utf-8")
        except UnicodeDecodeError:
            abort(400, "The address of the page is not valid: its query is not UTF-8 text.")

    CSRFProtect(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(user.bp)
    app.register_blueprint(admin.bp)
    errors.register(app)

    @app.context_processor
    def page_context() -> dict[str, Any]:
        return {"site": config, "logout_form": ActionForm() if g.get("user") is not None else None}

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault("Cache-Control", "no-store")  # pages show personal data
        return response

    return app


def from_file(path: str) -> Flask:
    """The application for the configuration file at `path`, for a WSGI server's command line."""
    return create_app(gateway_config.load(Path(path)))


__all__ = ["create_app", "from_file"]
