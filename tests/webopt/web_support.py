"""Helpers for the opt-in pages' tests: a real configuration and key file, the application,
and forms posted with their CSRF token as a browser would."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from gateway import config, keyfile
from gateway.store import Store
from signed_sender import Keyring, Policy
from webopt import create_app

PASSWORD = "correct horse battery staple"
SECRET_KEY = "test-secret-" + "x" * 32
_CSRF = re.compile(r'name="(?:[\w-]*-)?csrf_token" type="hidden" value="([^"]+)"')


@dataclass
class Site:
    config: config.Config
    store: Store

    @property
    def keyring(self) -> Keyring:
        return keyfile.load(self.config.signing.key_file)

    @property
    def policy(self) -> Policy:
        return self.config.signing.policy()


def write_config(directory: Path, store_url: str, **web: str) -> config.Config:
    """A configuration file (and key file) in `directory`; `web` sets [web] keys to TOML values."""
    settings = {"secure_cookies": "false", "login_max_failures": "3", **web}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "antiforgery.toml"
    path.write_text(
        f"""[site]
domains = ["example.ac.uk"]
[store]
url = "{store_url}"
[verification]
submission_service = "smtp.example.ac.uk"
[web]
"""
        + "".join(f"{key} = {value}\n" for key, value in settings.items())
    )
    loaded = config.load(path)
    if not loaded.signing.key_file.exists():
        keyfile.create(loaded.signing.key_file, int(time.time()) - 40 * 86400)
    return loaded


def make_app(cfg: config.Config, **overrides: object) -> Flask:
    return create_app(cfg, {"SECRET_KEY": SECRET_KEY, "TESTING": True, **overrides})


def csrf_token(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    found = _CSRF.search(page.text)
    assert found, f"no CSRF token on {path} ({page.status_code})"
    return found.group(1)


def post_form(client: FlaskClient, path: str, data: dict[str, str], page: str | None = None) -> TestResponse:
    """POST `data` with the CSRF token of the form on `page` (default: `path`)."""
    return client.post(path, data={"csrf_token": csrf_token(client, page or path), **data})


def log_in(client: FlaskClient, login: str, password: str = PASSWORD) -> TestResponse:
    return post_form(client, "/login", {"login": login, "password": password})
