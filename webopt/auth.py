"""Logging in and out, and who the current user is.

Two ways in: a front web server's single sign-on, trusted only when `[web] trust_remote_user`
is set (REMOTE_USER is then the login), or the store's password (Argon2id, gateway.passwords).
Password logins are throttled per client and per login (throttle.py) and answered 429 with the
time to wait. The session cookie holds the login only; the user record, admin flag included, is
read from the store on every request, so a change by a postmaster counts at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from gateway import passwords
from gateway.store import Store, UnknownUser, User

from .forms import LoginForm, has_control_characters
from .services import services
from .throttle import client_key, login_key

bp = Blueprint("auth", __name__)

View = TypeVar("View", bound=Callable[..., Any])


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the login is unknown, so that the answer takes as long as for a user."""
    return passwords.hash_password("not the password of anyone")


def _find_user(store: Store, login: str) -> User | None:
    try:
        return store.get_user(login)
    except UnknownUser:
        return None


def check_password(store: Store, login: str, password: str) -> User | None:
    """The user if `password` is theirs, else None; a hash made with old parameters is renewed."""
    user = _find_user(store, login)
    if user is None or not user.password_hash:
        passwords.verify_password(_dummy_hash(), password)
        return None
    if not passwords.verify_password(user.password_hash, password):
        return None
    if passwords.needs_rehash(user.password_hash):
        store.set_password_hash(user.login, passwords.hash_password(password))
    return user


@bp.before_app_request
def load_user() -> None:
    g.user = None
    g.remote_user = None
    if request.endpoint == "static":
        return
    svc = services()
    remote = request.environ.get("REMOTE_USER") if svc.config.web.trust_remote_user else None
    if remote:
        g.remote_user = remote
        g.user = _find_user(svc.store, remote)
        return
    login = session.get("login")
    if isinstance(login, str):
        g.user = _find_user(svc.store, login)
        if g.user is None:
            session.clear()


def login_required(view: View) -> View:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.user is None:
            if g.remote_user:
                abort(403, f"You are signed in as {g.remote_user}, but the mail service has no account of that name.")
            back = request.full_path.rstrip("?") if request.method == "GET" else None
            return redirect(url_for("auth.login", next=back))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def admin_required(view: View) -> View:
    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.user is not None and not g.user.is_admin:
            abort(403, "These pages are for the postmasters of the mail service.")
        return view(*args, **kwargs)

    return login_required(wrapped)  # type: ignore[return-value]


def _safe_next(target: str | None) -> str | None:
    """Only a path on this site: an open redirect would lend our name to phishing. No control
    characters: a line break cannot go into the Location header, and browsers drop tabs and
    line breaks from a URL, so `/<TAB>/host` would become `//host`."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    if has_control_characters(target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def _too_many(form: LoginForm, wait: float) -> Response:
    minutes = max(1, round(wait / 60))
    message = (
        "Too many failed logins from your network or for this login. "
        f"Try again in about {minutes} minute{'s' if minutes != 1 else ''}."
    )
    response = Response(render_template("login.html", form=form, error=message), status=429)
    response.headers["Retry-After"] = str(int(wait) + 1)
    return response


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | tuple[str, int] | str:
    if g.user is not None:
        return redirect(url_for("user.overview"))
    form = LoginForm()
    if request.method == "GET":
        return render_template("login.html", form=form)
    if not form.validate():
        return render_template("login.html", form=form), 400
    svc = services()
    keys = (client_key(request.remote_addr), login_key(form.login.data))
    wait = svc.throttle.retry_after(*keys)
    if wait > 0:
        return _too_many(form, wait)
    user = check_password(svc.store, form.login.data, form.password.data)
    if user is None:
        svc.throttle.failed(*keys)
        wait = svc.throttle.retry_after(*keys)
        if wait > 0:
            return _too_many(form, wait)
        return render_template("login.html", form=form, error="The login or the password is not right."), 403
    svc.throttle.succeeded(login_key(user.login))
    session.clear()  # a fresh session: nothing chosen before the login survives it
    session["login"] = user.login
    session.permanent = True
    return redirect(_safe_next(request.args.get("next")) or url_for("user.overview"), code=303)


@bp.route("/logout", methods=["POST"])
def logout() -> BaseResponse:
    session.clear()  # CSRFProtect has checked the form's token before this view runs
    if g.remote_user:
        flash("Your session here has ended; you are still signed in to the site's single sign-on.", "info")
    else:
        flash("You are logged out.", "info")
    return redirect(url_for("auth.login"), code=303)
