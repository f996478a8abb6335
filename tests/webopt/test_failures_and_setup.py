"""Trouble on our side is a 503 page, never a traceback; the session secret is kept like a key;
`antiforgery init` makes it and `antiforgery web` refuses bad input in one line; and a change on
the page reaches a running verification service without a restart."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from service_harness import RunningService
from web_support import Site, log_in, make_app, post_form, write_config

from callout.decision import Action
from gateway.cli import main
from gateway.store import Mode
from webopt import create_app
from webopt.secret import SecretFileError
from webopt.services import EXTENSION


def test_a_store_without_the_schema_gives_a_503_page(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}")
    app = make_app(cfg)
    client = app.test_client()
    assert client.get("/login").status_code == 200  # the login form needs no database
    response = log_in(client, "alice")
    assert response.status_code == 503
    assert "try again" in response.text and "Traceback" not in response.text and "empty.db" not in response.text


def test_an_unreadable_key_file_gives_a_503_page_without_its_path(alice: FlaskClient, site: Site) -> None:
    site.store.add_fixed_tag("alice", "list@lists.example.org")
    os.chmod(site.config.signing.key_file, 0o644)
    response = alice.get("/fixed")
    assert response.status_code == 503
    assert str(site.config.signing.key_file) not in response.text
    assert alice.get("/").status_code == 200  # pages that need no key still work


def test_the_session_secret_must_exist_be_private_and_long(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 's.db'}")
    secret = cfg.web.secret_key_file
    with pytest.raises(SecretFileError, match="antiforgery init"):
        create_app(cfg)
    secret.write_text("short")
    secret.chmod(0o600)
    with pytest.raises(SecretFileError, match="at least 32"):
        create_app(cfg)
    secret.write_text("s" * 40)
    secret.chmod(0o640)
    with pytest.raises(SecretFileError, match="chmod 600"):
        create_app(cfg)
    secret.chmod(0o600)
    assert create_app(cfg).config["SECRET_KEY"] == b"s" * 40


def test_init_writes_a_private_session_secret_the_app_accepts(tmp_path: Path) -> None:
    config_path = tmp_path / "antiforgery.toml"
    out = io.StringIO()
    assert main(["--config", str(config_path), "init", "--domain", "example.ac.uk"], out, io.StringIO()) == 0
    secret = tmp_path / "web-secret.key"
    assert "web session secret" in out.getvalue()
    assert secret.stat().st_mode & 0o777 == 0o600
    before = secret.read_bytes()
    assert main(["--config", str(config_path), "init"], io.StringIO(), io.StringIO()) == 0
    assert secret.read_bytes() == before  # kept, never overwritten
    from gateway.config import load

    create_app(load(config_path))


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:99999", "127.0.0.1:"])
def test_web_command_refuses_a_bad_listen_address_in_one_line(tmp_path: Path, listen: str) -> None:
    config_path = tmp_path / "antiforgery.toml"
    main(["--config", str(config_path), "init"], io.StringIO(), io.StringIO())
    err = io.StringIO()
    assert main(["--config", str(config_path), "web", "--listen", listen], io.StringIO(), err) == 2
    assert err.getvalue().count("\n") == 1 and "host:port" in err.getvalue()


def _decision_becomes(service: RunningService, action: Action, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = service.service.request("alice@example.ac.uk", "someone@other.example")
        if service.service.decide(request, "test", record=False).action is action:
            return True
        time.sleep(0.1)
    return False


def test_a_mode_chosen_on_the_page_reaches_the_running_service_without_restart(
    site: Site, running_service: RunningService
) -> None:
    app = make_app(site.config)
    try:
        client = app.test_client()
        log_in(client, "alice")
        assert _decision_becomes(running_service, Action.WARN)  # testing mode: an unsigned sender is flagged
        post_form(client, "/mode/full", {"mode": "full", "confirm": "y"})
        assert site.store.get_user("alice").mode is Mode.FULL
        assert _decision_becomes(running_service, Action.REJECT)
        post_form(client, "/mode", {"mode": "off"}, page="/")
        assert _decision_becomes(running_service, Action.ACCEPT)
    finally:
        app.extensions[EXTENSION].close()
