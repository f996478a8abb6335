"""The user's pages: mode (with the confirmation before full), covered addresses, forgeries,
leaked addresses and fixed addresses. A user sees and changes only their own."""

from __future__ import annotations

import datetime as dt
import html
import re
import time

import pytest
from flask.testing import FlaskClient
from web_support import Site, csrf_token, post_form

from gateway.store import EventKind, Mode
from gateway.tagcheck import check_address
from signed_sender import Reason, TagKind, sign, verify


def test_overview_explains_every_mode_and_what_to_do_first(alice: FlaskClient) -> None:
    page = html.unescape(alice.get("/").text)
    assert re.search(r"is\s+<strong>Testing</strong>", page)
    for mode in ("Off", "Testing", "Full"):
        assert f">{mode}</label>" in page
    assert "through <strong>smtp.example.ac.uk</strong>" in page
    assert "warning header (X-Antiforgery-Warning)" in page
    assert re.search(r'<input [^>]*checked[^>]*value="testing"', page)


def test_overview_lists_own_addresses_and_single_target_aliases_only(alice: FlaskClient, site: Site) -> None:
    site.store.add_address("alice", "a.smith@example.ac.uk")
    site.store.add_alias("webmaster@dept.example.ac.uk", ["alice"])
    site.store.add_alias("head@college.example.ac.uk", ["webmaster@dept.example.ac.uk"])  # a chain to alice
    site.store.add_alias("team@dept.example.ac.uk", ["alice", "bob"])
    site.store.add_alias("bobs@dept.example.ac.uk", ["bob"])
    page = alice.get("/").text
    covered = page[page.index('id="covered"') :]
    for address in (
        "alice@example.ac.uk",
        "a.smith@example.ac.uk",
        "webmaster@dept.example.ac.uk",
        "head@college.example.ac.uk",
    ):
        assert f"<code>{address}</code>" in covered
    assert "not protected" in covered and "<code>team@dept.example.ac.uk</code>" in covered
    assert "bobs@" not in covered


def test_switching_to_testing_mode_is_stored_and_takes_effect_within_seconds(app: object, site: Site) -> None:
    from web_support import log_in

    bob = app.test_client()  # type: ignore[attr-defined]
    log_in(bob, "bob")
    response = post_form(bob, "/mode", {"mode": "testing"}, page="/")
    assert response.status_code == 303
    assert site.store.get_user("bob").mode is Mode.TESTING
    assert "takes effect within a few seconds" in bob.get("/").text


def test_choosing_full_mode_asks_for_confirmation_first(alice: FlaskClient, site: Site) -> None:
    response = post_form(alice, "/mode", {"mode": "full"}, page="/")
    assert response.status_code == 303 and response.location == "/mode/full"
    assert site.store.get_user("alice").mode is Mode.TESTING
    page = alice.get("/mode/full").text
    assert "Turn on full protection?" in page and 'type="checkbox"' in page and "required" in page


def test_full_mode_without_ticking_the_confirmation_is_refused(alice: FlaskClient, site: Site) -> None:
    response = post_form(alice, "/mode/full", {"mode": "full"})
    assert response.status_code == 400
    assert "Tick the box" in response.text
    assert site.store.get_user("alice").mode is Mode.TESTING


def test_confirmed_full_mode_is_stored(alice: FlaskClient, site: Site) -> None:
    response = post_form(alice, "/mode/full", {"mode": "full", "confirm": "y"})
    assert response.status_code == 303
    assert site.store.get_user("alice").mode is Mode.FULL
    assert "now full protection" in alice.get("/").text
    assert alice.get("/mode/full").status_code == 303  # nothing left to confirm


def test_turning_protection_off_needs_no_confirmation(alice: FlaskClient, site: Site) -> None:
    assert post_form(alice, "/mode", {"mode": "off"}, page="/").status_code == 303
    assert site.store.get_user("alice").mode is Mode.OFF


@pytest.mark.parametrize("mode", ["", "paranoid", "FULL", "x" * 5000])
def test_an_unknown_mode_is_a_form_error(alice: FlaskClient, site: Site, mode: str) -> None:
    response = post_form(alice, "/mode", {"mode": mode}, page="/")
    assert response.status_code == 400 and 'class="errors"' in response.text
    assert site.store.get_user("alice").mode is Mode.TESTING


def test_changing_mode_without_a_csrf_token_is_refused(alice: FlaskClient, site: Site) -> None:
    assert alice.post("/mode", data={"mode": "off"}).status_code == 400
    assert alice.post("/mode/full", data={"mode": "full", "confirm": "y"}).status_code == 400
    assert site.store.get_user("alice").mode is Mode.TESTING


def test_forgeries_page_shows_own_events_with_a_chart_and_no_one_elses(alice: FlaskClient, site: Site) -> None:
    alice_id, bob_id = site.store.get_user("alice").id, site.store.get_user("bob").id
    now = dt.datetime.now(dt.UTC)
    site.store.record_event(EventKind.WARN, "unsigned", "alice@example.ac.uk", user_id=alice_id, client="192.0.2.9")
    site.store.record_event(EventKind.REJECT, "bad_mac", "alice=sxx@example.ac.uk", user_id=alice_id,
                            at=now - dt.timedelta(days=3))
    site.store.record_event(EventKind.DEFER, "store_unavailable", "alice@example.ac.uk", user_id=alice_id)
    site.store.record_event(EventKind.REJECT, "unsigned", "bob@example.ac.uk", user_id=bob_id)
    page = alice.get("/forgeries").text
    assert '<svg class="chart"' in page and "<script" not in page
    assert "flagged (testing mode): 1" in page and "rejected (full mode): 1" in page
    assert "192.0.2.9" in page and "wrong signature" in page and "no signature" in page
    assert "bob@example.ac.uk" not in page
    assert "deferred" not in page  # our own trouble is not a forgery


def _signed(site: Site, address: str, at: float | None = None) -> str:
    return sign(address, site.keyring, time.time() if at is None else at, site.policy)


def test_reporting_an_own_leaked_address_blacklists_it_until_it_expires(alice: FlaskClient, site: Site) -> None:
    leaked = _signed(site, "alice@example.ac.uk")
    response = post_form(alice, "/leak", {"signed_address": leaked.upper(), "reason": "in a bug tracker"})
    assert response.status_code == 303
    page = alice.get("/leak").text
    assert "is blacklisted until" in page and "takes effect within a few seconds" in page
    assert leaked.lower() in page and "in a bug tracker" in page
    [entry] = site.store.blacklist_list()
    assert entry.signed_address == leaked.lower() and entry.base_address == "alice@example.ac.uk"
    assert entry.expires_at > dt.datetime.now(dt.UTC) + dt.timedelta(days=6)
    check = check_address(leaked, site.keyring, time.time(), site.policy, site.store)
    assert not check.ok and check.reason == "blacklisted"


def test_reporting_an_address_of_an_alias_of_ones_own_is_accepted(alice: FlaskClient, site: Site) -> None:
    site.store.add_alias("webmaster@dept.example.ac.uk", ["alice"])
    leaked = _signed(site, "webmaster@dept.example.ac.uk")
    assert post_form(alice, "/leak", {"signed_address": leaked}).status_code == 303
    assert site.store.is_blacklisted(leaked)


def test_reporting_someone_elses_signed_address_is_refused(alice: FlaskClient, site: Site) -> None:
    response = post_form(alice, "/leak", {"signed_address": _signed(site, "bob@example.ac.uk")})
    assert response.status_code == 400 and "not one of your addresses" in response.text
    assert site.store.blacklist_list() == []


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("alice@example.ac.uk", "carries no tag"),
        ("", "This field is required"),
        ("not an address", "carries no tag"),
        ("a" * 400 + "@example.ac.uk", "Field cannot be longer than"),
        ("alice=sx\r\n@example.ac.uk", "control characters"),
    ],
)
def test_malformed_or_oversized_leak_reports_are_form_errors(
    alice: FlaskClient, site: Site, address: str, message: str
) -> None:
    response = post_form(alice, "/leak", {"signed_address": address})
    assert response.status_code == 400
    assert message in html.unescape(response.text)
    assert site.store.blacklist_list() == []


def test_an_oversized_reason_is_a_form_error(alice: FlaskClient, site: Site) -> None:
    leaked = _signed(site, "alice@example.ac.uk")
    response = post_form(alice, "/leak", {"signed_address": leaked, "reason": "r" * 201})
    assert response.status_code == 400 and site.store.blacklist_list() == []


def test_reporting_an_expired_address_stores_nothing(alice: FlaskClient, site: Site) -> None:
    old = _signed(site, "alice@example.ac.uk", at=time.time() - 30 * 86400)
    assert post_form(alice, "/leak", {"signed_address": old}).status_code == 303
    assert "has expired already" in alice.get("/leak").text
    assert site.store.blacklist_list() == []


def test_reporting_a_fixed_address_says_to_revoke_it_instead(alice: FlaskClient, site: Site) -> None:
    post_form(alice, "/fixed", {"recipient": "list@lists.example.org"})
    fixed = re.search(r"<code>(alice=f[^<]+)</code>", alice.get("/fixed").text)
    assert fixed
    response = post_form(alice, "/leak", {"signed_address": fixed.group(1)})
    assert response.status_code == 400 and "revoke the fixed tag" in response.text


def test_adding_a_fixed_address_shows_the_address_to_subscribe_with(alice: FlaskClient, site: Site) -> None:
    response = post_form(alice, "/fixed", {"recipient": "List@Lists.Example.org", "note": "ezmlm list"})
    assert response.status_code == 303
    page = alice.get("/fixed").text
    [tag] = site.store.list_fixed_tags("alice")
    assert tag.recipient == "list@lists.example.org" and tag.note == "ezmlm list"
    subscribe = re.search(r"<code>(alice=f[^<]+@example\.ac\.uk)</code>", page)
    assert subscribe and "takes effect within a few seconds" in page
    verdict = verify(subscribe.group(1), site.keyring, time.time(), site.policy)
    assert verdict.reason is Reason.VALID and verdict.kind is TagKind.FIXED and verdict.fixed_id == tag.id


def test_a_domain_wide_fixed_address_is_accepted(alice: FlaskClient, site: Site) -> None:
    assert post_form(alice, "/fixed", {"recipient": "*@lists.example.org"}).status_code == 303
    assert [t.recipient for t in site.store.list_fixed_tags("alice")] == ["*@lists.example.org"]


@pytest.mark.parametrize("recipient", ["", "no at sign", "a@b@c", "x" * 300 + "@example.org", "list@\x00.org"])
def test_malformed_fixed_address_recipients_are_form_errors(alice: FlaskClient, site: Site, recipient: str) -> None:
    response = post_form(alice, "/fixed", {"recipient": recipient})
    assert response.status_code == 400 and 'class="errors"' in response.text
    assert site.store.list_fixed_tags("alice") == []


def test_revoking_an_own_fixed_address(alice: FlaskClient, site: Site) -> None:
    tag = site.store.add_fixed_tag("alice", "list@lists.example.org")
    assert post_form(alice, f"/fixed/{tag.id}/revoke", {}, page="/fixed").status_code == 303
    assert not site.store.get_fixed_tag(tag.id).active
    assert "is revoked" in alice.get("/fixed").text


def test_another_users_fixed_address_cannot_be_revoked_or_seen(alice: FlaskClient, site: Site) -> None:
    bobs = site.store.add_fixed_tag("bob", "secret-list@lists.example.org")
    response = post_form(alice, f"/fixed/{bobs.id}/revoke", {}, page="/fixed")
    assert response.status_code == 404
    assert site.store.get_fixed_tag(bobs.id).active
    assert "secret-list" not in alice.get("/fixed").text


@pytest.mark.parametrize("path", ["/fixed/999999/revoke", f"/fixed/{2**63}/revoke", "/fixed/abc/revoke"])
def test_revoking_an_unknown_fixed_address_is_404(alice: FlaskClient, path: str) -> None:
    assert post_form(alice, path, {}, page="/fixed").status_code == 404


def test_revoking_without_a_csrf_token_is_refused(alice: FlaskClient, site: Site) -> None:
    tag = site.store.add_fixed_tag("alice", "list@lists.example.org")
    assert alice.post(f"/fixed/{tag.id}/revoke").status_code == 400
    assert site.store.get_fixed_tag(tag.id).active


def test_an_oversized_request_body_is_refused_with_413(alice: FlaskClient) -> None:
    token = csrf_token(alice, "/leak")
    response = alice.post("/leak", data={"csrf_token": token, "signed_address": "a" * 100_000})
    assert response.status_code == 413 and "Traceback" not in response.text


def test_unknown_pages_and_wrong_methods_get_short_error_pages(alice: FlaskClient) -> None:
    assert alice.get("/nowhere").status_code == 404
    response = alice.delete("/fixed")
    assert response.status_code == 405 and "<h1>Method Not Allowed" in response.text
