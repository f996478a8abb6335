"""[local] (antiforgery sendmail) and [verification] webmail_token_file: defaults, checks, paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config
from gateway.config import ConfigError


def test_local_defaults_to_the_mta_on_port_25_and_no_mapping(tmp_path: Path) -> None:
    loaded = config.parse(tmp_path / "a.toml", "")
    assert (loaded.local.upstream, loaded.local.user_map(), loaded.local.timeout) == ("127.0.0.1:25", {}, 120.0)
    assert loaded.verification.webmail_token_file == ""


def test_local_users_map_unix_names_to_logins(tmp_path: Path) -> None:
    text = '[local]\nupstream = "[::1]:10025"\nusers = ["root = Postmaster", "www-data=webmaster"]\n'
    loaded = config.parse(tmp_path / "a.toml", text)
    assert loaded.local.user_map() == {"root": "postmaster", "www-data": "webmaster"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[local]\nupstream = "localhost"\n', r"\[local\] upstream: 'localhost' is not host:port"),
        ('[local]\nusers = ["root"]\n', r"\[local\] users: 'root' is not unixname=login"),
        ('[local]\nusers = ["=alice"]\n', r"\[local\] users: '=alice' is not unixname=login"),
        ("[local]\ntimeout = -1\n", r"\[local\] timeout must be a positive number"),
        ("[local]\nupstrem = 1\n", r"unknown setting \[local\] upstrem"),
    ],
)
def test_bad_local_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse(tmp_path / "a.toml", text)


def test_webmail_token_file_is_relative_to_the_configuration(tmp_path: Path) -> None:
    loaded = config.parse(tmp_path / "a.toml", '[verification]\nwebmail_token_file = "webmail.token"\n')
    assert loaded.verification.webmail_token_file == str(tmp_path.resolve() / "webmail.token")
    absolute = config.parse(tmp_path / "a.toml", '[verification]\nwebmail_token_file = "/etc/af/token"\n')
    assert absolute.verification.webmail_token_file == "/etc/af/token"
