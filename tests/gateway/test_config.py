"""Configuration: one TOML file, checked whole, with errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import config
from gateway.config import ConfigError


def test_template_parses_to_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "antiforgery.toml"
    path.write_text(config.template(["Example.ac.uk"]))
    loaded = config.load(path)
    assert loaded.site.domains == ("example.ac.uk",)
    assert loaded.signing.key_file == tmp_path.resolve() / "keys.toml"
    assert loaded.store.url == f"sqlite:///{tmp_path.resolve()}/antiforgery.db"
    policy = loaded.signing.policy()
    assert policy.separator == "=" and policy.max_age == 7 * 86400


def test_absolute_paths_and_other_databases_are_kept(tmp_path: Path) -> None:
    text = '[store]\nurl = "postgresql+psycopg://u@h/db"\n[signing]\nkey_file = "/etc/af/keys.toml"\n'
    loaded = config.parse(tmp_path / "a.toml", text)
    assert loaded.store.url == "postgresql+psycopg://u@h/db"
    assert loaded.signing.key_file == Path("/etc/af/keys.toml")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u:s3cret@db.example.ac.uk:54x2/antiforgery", "the port in the database URL is not a number"),
        ("mysql://u:s3cret@db.example.ac.uk/antiforgery", "the store runs on sqlite or postgresql, not mysql"),
        ("postgresql+psycopg2://u:s3cret@db.example.ac.uk/db", "the postgresql[+]psycopg2 driver is not installed"),
        ("s3cret", "not a database URL"),
    ],
)
def test_a_store_url_that_cannot_work_is_named_without_its_password(tmp_path: Path, url: str, message: str) -> None:
    """Found before anything connects, instead of an internal error at the first command."""
    with pytest.raises(ConfigError, match=r"\[store\] url: " + message) as raised:
        config.parse(tmp_path / "a.toml", f'[store]\nurl = "{url}"\n')
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sigining]\n", r"unknown section \[sigining\]"),
        ("[signing]\nseperator = '='\n", r"unknown setting \[signing\] seperator"),
        ("[signing]\nmax_age_days = '7'\n", r"\[signing\] max_age_days must be of type int"),
        ("[signing]\nmax_age_days = true\n", r"\[signing\] max_age_days must be of type int"),
        ("[signing]\nseparator = '@'\n", r"\[signing\]: separator must be one of"),
        ("[signing]\nmax_age_days = 400\n", r"max_age_days must be between 1 and 60"),
        ("[site]\ndomains = 'example.ac.uk'\n", r"\[site\] domains must be a list of strings"),
        ("[site\n", "not valid TOML"),
        ("site = 3\n", r"\[site\] must be a table"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config.parse(tmp_path / "a.toml", text)


def test_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="antiforgery init"):
        config.load(tmp_path / "nope.toml")


def test_the_example_configuration_names_every_setting_and_loads() -> None:
    import tomllib
    from dataclasses import fields

    example = Path(__file__).resolve().parents[2] / "deploy" / "antiforgery.example.toml"
    raw = tomllib.loads(example.read_text())
    for section, cls in config._SECTIONS.items():
        missing = {f.name for f in fields(cls)} - set(raw.get(section, {}))
        assert not missing, f"deploy/antiforgery.example.toml lacks [{section}] {', '.join(sorted(missing))}"
    loaded = config.load(example)
    assert loaded.site.domains == ("example.ac.uk",)
