"""Logging in and out: the store's password, a trusted REMOTE_USER, sessions, CSRF, throttling."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from web_support import PASSWORD, Site, csrf_token, log_in, make_app, post_form, write_config

from webopt.services import EXTENSION

USER_PAGES = ["/", "/forgeries", "/leak", "/fixed", "/mode/full"]


@pytest.mark.parametrize("path", USER_PAGES)
def test_pages_send_a_visitor_who_is_not_logged_in_to_the_login_page(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response.location.startswith("/login?next=")


NOT_UTF8 = {"QUERY_STRING": "next=/fixed?x=\xff"}  # the raw octet 0xFF, as a WSGI server passes it (Latin-1)


@pytest.mark.parametrize("path", ["/login", "/fixed", "/admin/fixed", "/admin/stats"])
def test_a_query_string_that_is_not_utf8_is_a_400_not_a_500(client: FlaskClient, carol: FlaskClient, path: str) -> None:
    """werkzeug decodes the query as strict UTF-8 (request.args, request.full_path), so any other
    octets there are bad input, answered with a 400 page for visitors and users alike."""
    for visitor in (client, carol):
        response = visitor.get(path, environ_overrides=NOT_UTF8)
        assert response.status_code == 400 and "UTF-8" in response.text


def test_a_login_posted_to_a_query_that_is_not_utf8_is_a_400_without_a_session(client: FlaskClient) -> None:
    form = {"csrf_token": csrf_token(client, "/login"), "login": "alice", "password": PASSWORD}
    assert client.post("/login", data=form, environ_overrides=NOT_UTF8).status_code == 400
    assert client.get("/").status_code == 302


def test_login_with_the_store_password_opens_the_users_page(client: FlaskClient) -> None:
    response = log_in(client, "Alice")
    assert response.status_code == 303 and response.location == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert "alice@example.ac.uk" in page.text and "Log out" in page.text


def test_session_cookie_is_secure_httponly_and_samesite_by_default(site: Site, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "secure", site.config.store.url, secure_cookies="true")
    app = make_app(cfg)
    try:
        cookie = log_in(app.test_client(), "alice").headers["Set-Cookie"]
    finally:
        app.extensions[EXTENSION].close()
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_wrong_password_is_refused_without_a_session(client: FlaskClient) -> None:
    response = log_in(client, "alice", "wrong")
    assert response.status_code == 403
    assert "not right" in response.text
    assert client.get("/").status_code == 302


def test_unknown_login_gets_the_same_answer_as_a_wrong_password(client: FlaskClient) -> None:
    assert log_in(client, "mallory", "whatever").status_code == 403


def test_user_without_a_password_cannot_log_in(client: FlaskClient, site: Site) -> None:
    site.store.add_user("dave", "dave@example.ac.uk")
    assert log_in(client, "dave", "").status_code == 400  # empty field: a form error
    assert log_in(client, "dave", "anything").status_code == 403


def test_login_without_a_csrf_token_is_refused_with_400(client: FlaskClient) -> None:
    response = client.post("/login", data={"login": "alice", "password": PASSWORD})
    assert response.status_code == 400
    assert "Form expired" in response.text


def test_login_with_a_forged_csrf_token_is_refused_with_400(client: FlaskClient) -> None:
    response = client.post("/login", data={"login": "alice", "password": PASSWORD, "csrf_token": "forged"})
    assert response.status_code == 400


def test_oversized_or_malformed_login_fields_are_form_errors(client: FlaskClient) -> None:
    assert log_in(client, "a" * 300).status_code == 400
    assert log_in(client, "alice\r\nInjected: yes").status_code == 400
    response = log_in(client, "")
    assert response.status_code == 400 and 'aria-invalid="true"' in response.text


def test_repeated_failures_lock_the_login_out_with_429(client: FlaskClient, app: Flask) -> None:
    # login_max_failures = 3 in the test configuration
    assert [log_in(client, "alice", "wrong").status_code for _ in range(2)] == [403, 403]
    locked = log_in(client, "alice", "wrong")
    assert locked.status_code == 429
    assert "Too many failed logins" in locked.text and "minutes" in locked.text
    assert int(locked.headers["Retry-After"]) > 0
    # Even the right password is refused until the lockout ends: no guessing through it.
    assert log_in(client, "alice").status_code == 429


def test_lockout_of_one_login_leaves_other_logins_from_elsewhere_alone(app: Flask) -> None:
    attacker = app.test_client()
    for _ in range(3):
        log_in(attacker, "alice", "wrong")
    other_client = app.test_client()
    other_client.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert log_in(other_client, "bob").status_code == 303
    assert log_in(app.test_client(), "alice").status_code == 429  # alice's login itself is locked


def test_lockout_of_a_client_covers_every_login_it_tries(app: Flask) -> None:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "2001:db8:1:2::1"
    for login in ("u1", "u2", "u3"):
        log_in(client, login, "wrong")
    neighbour = app.test_client()
    neighbour.environ_base["REMOTE_ADDR"] = "2001:db8:1:2::99"  # same /64
    assert log_in(neighbour, "bob").status_code == 429


def test_logout_ends_the_session(alice: FlaskClient) -> None:
    response = post_form(alice, "/logout", {}, page="/")
    assert response.status_code == 303 and response.location == "/login"
    assert alice.get("/").status_code == 302
    assert "You are logged out" in alice.get("/login").text


def test_logout_needs_a_csrf_token_and_post(alice: FlaskClient) -> None:
    assert alice.post("/logout").status_code == 400
    assert alice.get("/logout").status_code == 405
    assert alice.get("/").status_code == 200


def test_after_login_only_a_path_on_this_site_is_followed(client: FlaskClient) -> None:
    token = csrf_token(client, "/login")
    form = {"csrf_token": token, "login": "alice", "password": PASSWORD}
    assert client.post("/login?next=/fixed", data=form).location == "/fixed"
    client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        token = csrf_token(client, "/login")
        response = client.post("/login", query_string={"next": target}, data={**form, "csrf_token": token})
        assert response.location == "/", target
        client.post("/logout", data={"csrf_token": csrf_token(client, "/")})


@pytest.mark.parametrize("target", ["/fixed\r\nSet-Cookie: x=1", "/fixed\nX: y", "/\t/evil.example"])
def test_a_next_path_with_control_characters_is_dropped_not_a_500(client: FlaskClient, target: str) -> None:
    """A line break in the Location header would split it; werkzeug refuses to send one, so a `next`
    with one must be ignored like any other unsafe target, not end a successful login in a 500."""
    token = csrf_token(client, "/login")
    form = {"csrf_token": token, "login": "alice", "password": PASSWORD}
    response = client.post("/login", query_string={"next": target}, data=form)
    assert response.status_code == 303 and response.location == "/"


def test_remote_user_is_ignored_unless_trusted(client: FlaskClient) -> None:
    client.environ_base["REMOTE_USER"] = "alice"
    assert client.get("/").status_code == 302


def test_trusted_remote_user_is_logged_in_without_a_password(site: Site, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "sso", site.config.store.url, trust_remote_user="true")
    app = make_app(cfg)
    try:
        client = app.test_client()
        client.environ_base["REMOTE_USER"] = "alice"
        page = client.get("/")
        assert page.status_code == 200 and "alice@example.ac.uk" in page.text
        assert client.get("/login").location == "/"
        client.environ_base["REMOTE_USER"] = "stranger"
        refused = client.get("/")
        assert refused.status_code == 403 and "no account" in refused.text
        assert client.get("/admin/").status_code == 403
    finally:
        app.extensions[EXTENSION].close()


def test_pages_forbid_framing_scripts_and_caching(alice: FlaskClient) -> None:
    response = alice.get("/")
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert "<script" not in response.text


def test_a_session_whose_user_was_removed_from_the_store_is_ended(alice: FlaskClient, site: Site) -> None:
    from sqlalchemy import text

    with site.store.engine.begin() as connection:
        connection.execute(text("DELETE FROM users WHERE login = 'alice'"))
    assert alice.get("/").status_code == 302


def test_a_password_hash_made_with_older_parameters_is_renewed_at_login(client: FlaskClient, site: Site) -> None:
    from argon2 import PasswordHasher

    old = PasswordHasher(time_cost=2, memory_cost=128, parallelism=1).hash(PASSWORD)
    site.store.set_password_hash("alice", old)
    assert log_in(client, "alice").status_code == 303
    renewed = site.store.get_user("alice").password_hash
    assert renewed is not None and renewed != old and "t=1" in renewed
