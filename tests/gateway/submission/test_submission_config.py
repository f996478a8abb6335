"""[submission]: defaults, file names relative to the configuration file, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config
from gateway.config import ConfigError
from gateway.submission.limits import Limits


def test_template_has_the_proxy_off_and_parses(tmp_path: Path) -> None:
    path = tmp_path / "antiforgery.toml"
    path.write_text(config.template(["example.ac.uk"], tls_files=("tls.crt", "tls.key")))
    submission = config.load(path).submission
    assert submission.listen == ""
    assert submission.tls_cert_file == str(tmp_path.resolve() / "tls.crt")
    assert submission.max_recipients == 100 and submission.max_line_length == 998
    assert submission.idle_timeout == 300.0 and submission.data_min_rate == 500
    assert Limits.from_config(submission) == Limits()  # the proxy's own defaults are the configuration's
    assert submission.upstream_reuse_seconds == 2.0 and submission.upstream_reuse_max_seconds == 300.0
    assert submission.upstream_reuse_max_idle == 10


def test_paths_are_resolved_and_dkim_file_names_keep_their_case(tmp_path: Path) -> None:
    text = (
        '[submission]\nlisten = "127.0.0.1:1587"\ntls_cert_file = "c.pem"\ntls_key_file = "/etc/k.pem"\n'
        'dkim_keys = ["Example.AC.UK=Sel2026:dkim/Example.pem"]\n'
    )
    submission = config.parse(tmp_path / "a.toml", text).submission
    assert submission.tls_key_file == "/etc/k.pem"
    assert submission.dkim_entries() == [("example.ac.uk", "Sel2026", tmp_path.resolve() / "dkim/Example.pem")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('listen = "nowhere"\n', r"\[submission\] listen: 'nowhere' is not host:port"),
        ('upstream = ""\n', r"\[submission\] upstream"),
        ('listen = "127.0.0.1:587"\n', r"listen is set but tls_cert_file is not"),
        ('tls_cert_file = "c.pem"\n', r"tls_cert_file and tls_key_file are set together"),
        ("max_recipients = 0\n", r"max_recipients must be at least 1"),
        ("max_line_length = 2000\n", r"max_line_length must be between 78 and 998"),
        ("idle_timeout = 0\n", r"idle_timeout must be a positive number"),
        ("data_min_rate = 0\n", r"data_min_rate must be at least 1"),
        ('dkim_keys = ["example.ac.uk"]\n', r"dkim_keys: 'example.ac.uk' is not domain=selector:key-file"),
        ("allow_auth_without_tls = true\n", r"unknown setting \[submission\] allow_auth_without_tls"),
        ("upstream_reuse_seconds = -1\n", r"upstream_reuse_seconds must be 0 \(off\) or a positive number"),
        ('upstream_reuse_seconds = "2s"\n', r"upstream_reuse_seconds must be 0 \(off\) or a positive number"),
        ("upstream_reuse_max_seconds = 0\n", r"upstream_reuse_max_seconds must be a positive number"),
        ("upstream_reuse_max_idle = 0\n", r"upstream_reuse_max_idle must be at least 1"),
    ],
)
def test_bad_submission_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse(tmp_path / "a.toml", "[submission]\n" + text)


def test_loopback_exemption_lets_a_proxy_run_without_tls(tmp_path: Path) -> None:
    text = '[submission]\nlisten = "127.0.0.1:1587"\nallow_auth_without_tls_on_loopback = true\n'
    assert config.parse(tmp_path / "a.toml", text).submission.allow_auth_without_tls_on_loopback


def test_upstream_reuse_can_be_turned_off_with_zero(tmp_path: Path) -> None:
    submission = config.parse(tmp_path / "a.toml", "[submission]\nupstream_reuse_seconds = 0\n").submission
    assert submission.upstream_reuse_seconds == 0.0


def test_the_login_cache_can_be_turned_off_with_zero(tmp_path: Path) -> None:
    """[auth] cache_seconds = 0 checks every password (the example file says so); -1 is a mistake."""
    assert config.parse(tmp_path / "a.toml", "[auth]\ncache_seconds = 0\n").auth.cache_seconds == 0.0
    with pytest.raises(config.ConfigError, match=r"\[auth\] cache_seconds must be 0 \(off\) or a positive number"):
        config.parse(tmp_path / "a.toml", "[auth]\ncache_seconds = -1\n")
