"""The postmasters' pages (users with `is_admin`): users and modes, the blacklist, fixed
addresses, key rotation status and forgery statistics.

Keys are shown, never changed, here: rotating means copying the key file to every node
(`antiforgery keys rotate`), which a web page cannot do. Secrets are never shown.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from gateway.leaks import LeakRefused, blacklist_leak
from gateway.store import InvalidValue, Mode, NotFound, UnknownUser

from .auth import admin_required
from .forms import ActionForm, AdminModeForm, LeakForm, has_control_characters
from .services import services
from .stats import FORGERY_KINDS, KIND_LABELS, MAX_DAYS, site_statistics
from .user import MAX_TAG_ID, TAKES_EFFECT

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.route("/")
@admin_required
def users() -> str:
    people = services().store.list_users()
    forms = {user.login: AdminModeForm(prefix=f"u{user.id}", mode=user.mode.value) for user in people}
    return render_template("admin/users.html", users=people, forms=forms)


@bp.route("/users/<login>/mode", methods=["POST"])
@admin_required
def set_mode(login: str) -> Response:
    store = services().store
    if has_control_characters(login):
        abort(404)  # no login has one, and PostgreSQL refuses a NUL as a fault (503), not as "no such user"
    try:
        user = store.get_user(login)
    except UnknownUser:
        abort(404)
    form = AdminModeForm(prefix=f"u{user.id}")
    if not form.validate():
        abort(400, "Choose one of the modes off, testing or full.")
    mode = Mode(form.mode.data)
    if mode is not user.mode:
        store.set_mode(user.login, mode)
        flash(f"{user.login} is now in mode {mode.value}. {TAKES_EFFECT}", "success")
    return redirect(url_for("admin.users"), code=303)


@bp.route("/blacklist", methods=["GET", "POST"])
@admin_required
def blacklist() -> Response | str | tuple[str, int]:
    """Leaked signed addresses; a postmaster may blacklist anyone's (as `antiforgery blacklist add`)."""
    form = LeakForm()
    store = services().store
    if form.is_submitted():
        if form.validate():
            svc = services()
            reason = form.reason.data or f"reported by postmaster {g.user.login}"
            try:
                report = blacklist_leak(store, form.signed_address.data, svc.keyring(), svc.now(), svc.policy, reason)
            except (LeakRefused, InvalidValue) as exc:
                form.signed_address.errors = [*form.signed_address.errors, str(exc)]
            else:
                if report.blacklisted and report.expires_at is not None:
                    flash(
                        f"{report.signed_address} is blacklisted until {report.expires_at:%Y-%m-%d %H:%M} UTC. "
                        f"{TAKES_EFFECT}",
                        "success",
                    )
                else:
                    flash(f"{form.signed_address.data} has expired already; nothing to do.", "info")
                return redirect(url_for("admin.blacklist"), code=303)
        return render_template("admin/blacklist.html", form=form, entries=store.blacklist_list()), 400
    return render_template("admin/blacklist.html", form=form, entries=store.blacklist_list())


@bp.route("/fixed")
@admin_required
def fixed() -> str:
    show_all = request.args.get("all") == "1"
    tags = services().store.list_fixed_tags(include_revoked=show_all)
    return render_template("admin/fixed.html", tags=tags, show_all=show_all, action=ActionForm())


@bp.route("/fixed/<int:tag_id>/revoke", methods=["POST"])
@admin_required
def revoke_fixed(tag_id: int) -> Response:
    if tag_id > MAX_TAG_ID:
        abort(404)
    try:
        tag = services().store.revoke_fixed_tag(tag_id)
    except NotFound:
        abort(404)
    flash(f"Fixed address {tag.id} of {tag.login} for {tag.recipient} is revoked. {TAKES_EFFECT}", "success")
    return redirect(url_for("admin.fixed"), code=303)


@bp.route("/keys")
@admin_required
def keys() -> str:
    svc = services()
    ring = svc.keyring()
    now = svc.now()
    rows = []
    for key_id in ring:
        key = ring[key_id]
        created = dt.datetime.fromtimestamp(key.created, dt.UTC) if key.created else None
        age = int(max(0.0, now - key.created) // 86400) if key.created else None
        rows.append((key_id, created, age, key_id == ring.current.id))
    return render_template("admin/keys.html", rows=rows, key_file=svc.config.signing.key_file)


@bp.route("/stats")
@admin_required
def stats() -> str:
    days = request.args.get("days", "30")
    # ASCII digits of a sane length: isdigit() alone takes '²', and int() refuses both it and
    # numbers of more than 4300 digits (ValueError, a 500 page).
    if not (days.isascii() and days.isdigit() and len(days) <= 9) or not 1 <= int(days) <= MAX_DAYS:
        abort(400, f"days must be a whole number from 1 to {MAX_DAYS}.")
    svc = services()
    by_mode, by_reason, rows = site_statistics(svc.store, svc.now(), int(days))
    return render_template(
        "admin/stats.html",
        days=int(days),
        by_mode=by_mode,
        by_reason=by_reason,
        rows=rows,
        kinds=[KIND_LABELS[k] for k in FORGERY_KINDS],
    )
