"""The postmasters' pages: only for users with is_admin; users and modes, blacklist, fixed
addresses, keys (read-only) and statistics."""

from __future__ import annotations

import datetime as dt
import html
import time

import pytest
from flask.testing import FlaskClient
from web_support import Site, post_form

from gateway import keyfile
from gateway.store import EventKind, Mode
from signed_sender import sign

ADMIN_PAGES = ["/admin/", "/admin/blacklist", "/admin/fixed", "/admin/keys", "/admin/stats"]
ADMIN_POSTS = ["/admin/users/bob/mode", "/admin/blacklist", "/admin/fixed/1/revoke"]


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages_are_forbidden_to_other_users(alice: FlaskClient, path: str) -> None:
    response = alice.get(path)
    assert response.status_code == 403 and "postmasters" in response.text


@pytest.mark.parametrize("path", ADMIN_POSTS)
def test_admin_actions_are_forbidden_to_other_users(alice: FlaskClient, site: Site, path: str) -> None:
    tag = site.store.add_fixed_tag("bob", "list@lists.example.org")
    path = path.replace("/1/", f"/{tag.id}/")
    response = post_form(alice, path, {"mode": "full", "u2-mode": "full", "signed_address": "x"}, page="/")
    assert response.status_code == 403
    assert site.store.get_user("bob").mode is Mode.OFF and site.store.get_fixed_tag(tag.id).active


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages_send_visitors_to_the_login_page(client: FlaskClient, path: str) -> None:
    assert client.get(path).status_code == 302


def test_postmaster_sees_users_with_modes_and_changes_one(carol: FlaskClient, site: Site) -> None:
    page = carol.get("/admin/").text
    for login in ("alice", "bob", "carol"):
        assert f">{login}" in page
    bob = site.store.get_user("bob")
    response = post_form(carol, "/admin/users/bob/mode", {f"u{bob.id}-mode": "full"}, page="/admin/")
    assert response.status_code == 303
    assert site.store.get_user("bob").mode is Mode.FULL
    assert "bob is now in mode full" in carol.get("/admin/").text


def test_setting_a_mode_needs_a_known_user_a_known_mode_and_a_csrf_token(carol: FlaskClient, site: Site) -> None:
    assert post_form(carol, "/admin/users/nobody/mode", {"u1-mode": "full"}, page="/admin/").status_code == 404
    bob = site.store.get_user("bob")
    field = f"u{bob.id}-mode"
    assert post_form(carol, "/admin/users/bob/mode", {field: "paranoid"}, page="/admin/").status_code == 400
    assert post_form(carol, "/admin/users/bob/mode", {}, page="/admin/").status_code == 400
    assert carol.post("/admin/users/bob/mode", data={field: "full"}).status_code == 400
    assert site.store.get_user("bob").mode is Mode.OFF


@pytest.mark.parametrize("login", ["%00", "bob%00", "b%0Aob"])
def test_setting_the_mode_of_a_login_with_a_control_character_is_404_not_503(
    carol: FlaskClient, site: Site, login: str
) -> None:
    """No login holds one; PostgreSQL refuses a NUL in a query as a fault, which is not ours to report
    as "try again later"."""
    bob = site.store.get_user("bob")
    response = post_form(carol, f"/admin/users/{login}/mode", {f"u{bob.id}-mode": "full"}, page="/admin/")
    assert response.status_code == 404
    assert site.store.get_user("bob").mode is Mode.OFF


def test_postmaster_blacklists_anyones_leaked_address_and_lists_it(carol: FlaskClient, site: Site) -> None:
    leaked = sign("bob@example.ac.uk", site.keyring, time.time(), site.policy)
    response = post_form(carol, "/admin/blacklist", {"signed_address": leaked})
    assert response.status_code == 303
    page = carol.get("/admin/blacklist").text
    assert leaked.lower() in page and "reported by postmaster carol" in page
    assert site.store.is_blacklisted(leaked)


def test_blacklisting_an_unsigned_address_is_a_form_error(carol: FlaskClient, site: Site) -> None:
    response = post_form(carol, "/admin/blacklist", {"signed_address": "bob@example.ac.uk"})
    assert response.status_code == 400 and "carries no tag" in response.text
    assert post_form(carol, "/admin/blacklist", {"signed_address": "b" * 500}).status_code == 400


def test_postmaster_sees_everyones_fixed_addresses_and_revokes_one(carol: FlaskClient, site: Site) -> None:
    tag = site.store.add_fixed_tag("bob", "list@lists.example.org", "ezmlm")
    site.store.add_fixed_tag("alice", "other@lists.example.org")
    page = carol.get("/admin/fixed").text
    assert "list@lists.example.org" in page and "other@lists.example.org" in page
    assert post_form(carol, f"/admin/fixed/{tag.id}/revoke", {}, page="/admin/fixed").status_code == 303
    assert not site.store.get_fixed_tag(tag.id).active
    assert "list@lists.example.org" not in carol.get("/admin/fixed").text.split("<table")[1]
    assert "revoked" in carol.get("/admin/fixed?all=1").text
    assert post_form(carol, "/admin/fixed/999999/revoke", {}, page="/admin/fixed").status_code == 404


def test_key_page_shows_ids_ages_and_the_signing_key_but_no_secret(carol: FlaskClient, site: Site) -> None:
    ring = site.keyring
    rotated = ring.rotated(keyfile.new_secret(), int(time.time()))
    keyfile.save(site.config.signing.key_file, rotated)  # no restart: the page reads the file
    page = carol.get("/admin/keys").text
    assert "40 days" in page and "0 days" in page
    rows = page.split("<tbody>")[1]
    assert rows.index("<td>1</td>") < rows.index("signs and verifies")
    for key_id in rotated:
        assert rotated[key_id].secret.hex() not in page


def test_statistics_chart_forgeries_by_mode_and_by_reason(carol: FlaskClient, site: Site) -> None:
    bob = site.store.get_user("bob").id
    earlier = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    site.store.record_event(EventKind.REJECT, "unsigned", "bob@example.ac.uk", user_id=bob)
    site.store.record_event(EventKind.REJECT, "unsigned", "bob@example.ac.uk", user_id=bob, at=earlier)
    site.store.record_event(EventKind.WARN, "bad_mac", "alice=sxx@example.ac.uk")
    site.store.record_event(EventKind.DEFER, "store_unavailable", "bob@example.ac.uk")
    page = html.unescape(carol.get("/admin/stats").text)
    assert page.count('<svg class="chart"') == 2
    assert "rejected (full mode): 2" in page and "flagged (testing mode): 1" in page
    assert "deferred (temporary failure): 1" in page
    assert "no signature: 2" in page and "wrong signature: 1" in page
    assert "<th scope=\"row\">no signature</th><td>2</td><td>0</td><td>0</td>" in page
    short = html.unescape(carol.get("/admin/stats?days=1").text)
    assert "rejected (full mode): 1" in short


@pytest.mark.parametrize("days", ["0", "367", "-1", "abc", "1e3", "\u00b2", "9" * 5000])
def test_statistics_refuse_a_bad_number_of_days(carol: FlaskClient, days: str) -> None:
    assert carol.get(f"/admin/stats?days={days}").status_code == 400
