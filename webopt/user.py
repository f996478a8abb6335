"""The user's pages: their protection mode, what it covers, forgeries against them, leaked
addresses and fixed addresses. Every view acts on the logged-in user only (`g.user`).

Seed 003, "Summary": the mechanism "must be opt-in and well-explained to users", because mail
sent around the authenticated service is then rejected as forged. So the page explains each
mode, asks for confirmation before full mode, and names the service to send through.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, url_for
from werkzeug.wrappers import Response

from gateway.leaks import LeakRefused, blacklist_leak
from gateway.store import BlacklistEntry, FixedTag, InvalidValue, Mode, NotFound
from signed_sender import SigningError, sign_fixed

from .auth import login_required
from .coverage import coverage
from .forms import ActionForm, FixedTagForm, LeakForm, ModeForm
from .services import services
from .stats import FORGERY_KINDS, KIND_LABELS, forgeries_of, reason_label

bp = Blueprint("user", __name__)

TAKES_EFFECT = "It takes effect within a few seconds."
RECENT_EVENTS = 50
MAX_TAG_ID = 2**31 - 1


def _mode_changed(mode: Mode) -> None:
    names = {Mode.OFF: "off", Mode.TESTING: "testing mode", Mode.FULL: "full protection"}
    flash(f"Your forgery protection is now {names[mode]}. {TAKES_EFFECT}", "success")


@bp.route("/")
@login_required
def overview() -> str:
    form = ModeForm(mode=g.user.mode.value)
    return render_template("user/overview.html", form=form, coverage=coverage(services().store, g.user.login))


@bp.route("/mode", methods=["POST"])
@login_required
def change_mode() -> Response | tuple[str, int]:
    form = ModeForm()
    if not form.validate():
        cover = coverage(services().store, g.user.login)
        return render_template("user/overview.html", form=form, coverage=cover), 400
    mode = Mode(form.mode.data)
    if mode is Mode.FULL and g.user.mode is not Mode.FULL:
        return redirect(url_for("user.confirm_full"), code=303)
    if mode is not g.user.mode:
        services().store.set_mode(g.user.login, mode)
        _mode_changed(mode)
    return redirect(url_for("user.overview"), code=303)


@bp.route("/mode/full", methods=["GET", "POST"])
@login_required
def confirm_full() -> Response | str | tuple[str, int]:
    """The confirmation step: full mode loses mail sent any other way (seed 003, "Mechanism")."""
    form = ModeForm(mode=Mode.FULL.value)
    cover = coverage(services().store, g.user.login)
    if g.user.mode is Mode.FULL:
        flash("Full protection is already on.", "info")
        return redirect(url_for("user.overview"), code=303)
    if not form.is_submitted():
        return render_template("user/confirm_full.html", form=form, coverage=cover)
    if not form.validate() or form.mode.data != Mode.FULL.value or not form.confirm.data:
        if not form.confirm.data:
            form.confirm.errors = [*form.confirm.errors, "Tick the box to confirm, or go back."]
        return render_template("user/confirm_full.html", form=form, coverage=cover), 400
    services().store.set_mode(g.user.login, Mode.FULL)
    _mode_changed(Mode.FULL)
    return redirect(url_for("user.overview"), code=303)


@bp.route("/forgeries")
@login_required
def forgeries() -> str:
    svc = services()
    chart = forgeries_of(svc.store, g.user.login, svc.now())
    events = [e for e in svc.store.list_events(user=g.user.login, limit=RECENT_EVENTS) if e.kind in FORGERY_KINDS]
    return render_template(
        "user/forgeries.html", chart=chart, events=events, kind_labels=KIND_LABELS, reason_label=reason_label
    )


def _own_blacklist() -> list[BlacklistEntry]:
    mine = set(services().store.addresses_of(g.user.login))
    return [entry for entry in services().store.blacklist_list() if entry.base_address in mine]


@bp.route("/leak", methods=["GET", "POST"])
@login_required
def leak() -> Response | str | tuple[str, int]:
    """Report a signed address seen where it should not be (seed 003, "Cryptography")."""
    form = LeakForm()
    if form.is_submitted():
        if form.validate():
            svc = services()
            reason = form.reason.data or "reported as leaked by its owner"
            try:
                report = blacklist_leak(
                    svc.store,
                    form.signed_address.data,
                    svc.keyring(),
                    svc.now(),
                    svc.policy,
                    reason,
                    owner=g.user.login,
                )
            except (LeakRefused, InvalidValue) as exc:
                form.signed_address.errors = [*form.signed_address.errors, str(exc)]
            else:
                if report.blacklisted and report.expires_at is not None:
                    flash(
                        f"{report.signed_address} is blacklisted until {report.expires_at:%d %B %Y %H:%M} UTC, when it "
                        f"would expire anyway. {TAKES_EFFECT}",
                        "success",
                    )
                else:
                    flash(f"{form.signed_address.data} has expired already: it no longer works for anyone.", "info")
                return redirect(url_for("user.leak"), code=303)
        return render_template("user/leak.html", form=form, entries=_own_blacklist()), 400
    return render_template("user/leak.html", form=form, entries=_own_blacklist())


def _fixed_rows() -> list[tuple[FixedTag, str]]:
    """Each active fixed tag of the user with the address to subscribe with (or why there is none)."""
    svc = services()
    keyring, policy = svc.keyring(), svc.policy
    rows: list[tuple[FixedTag, str]] = []
    for tag in svc.store.list_fixed_tags(g.user.login):
        try:
            rows.append((tag, sign_fixed(g.user.primary_address, tag.id, keyring, policy)))
        except SigningError as exc:
            rows.append((tag, f"cannot be made: {exc}"))
    return rows


@bp.route("/fixed", methods=["GET", "POST"])
@login_required
def fixed() -> Response | str | tuple[str, int]:
    """Fixed addresses for recipients that need a constant sender (seed 003, "Envelope-dependent recipients")."""
    form = FixedTagForm()
    if form.is_submitted():
        if form.validate():
            try:
                tag = services().store.add_fixed_tag(g.user.login, form.recipient.data, form.note.data or "")
            except InvalidValue as exc:
                form.recipient.errors = [*form.recipient.errors, str(exc)]
            else:
                flash(
                    f"Fixed address {tag.id} for {tag.recipient} is ready; subscribe with it. {TAKES_EFFECT}", "success"
                )
                return redirect(url_for("user.fixed"), code=303)
        return render_template("user/fixed.html", form=form, rows=_fixed_rows(), action=ActionForm()), 400
    return render_template("user/fixed.html", form=form, rows=_fixed_rows(), action=ActionForm())


@bp.route("/fixed/<int:tag_id>/revoke", methods=["POST"])
@login_required
def revoke_fixed(tag_id: int) -> Response:
    store = services().store
    if tag_id > MAX_TAG_ID:
        abort(404)  # beyond any database integer: no such tag, and no query that would fail
    try:
        tag = store.get_fixed_tag(tag_id)
    except NotFound:
        abort(404)
    if tag.login != g.user.login:
        abort(404)  # someone else's: not found, so ids reveal nothing
    store.revoke_fixed_tag(tag.id)
    flash(
        f"Fixed address {tag.id} for {tag.recipient} is revoked: it no longer passes the forgery check. {TAKES_EFFECT}",
        "success",
    )
    return redirect(url_for("user.fixed"), code=303)
