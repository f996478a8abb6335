"""The `antiforgery` command line: every command, and bad input as one line with exit status 2."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.cli import main

NOW = 1_790_000_000


@dataclass
class Result:
    status: int
    out: str
    err: str


class Cli:
    def __init__(self, config: Path) -> None:
        self.config = config

    def __call__(self, *args: str, stdin: str | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        old_stdin = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            status = main(["--config", str(self.config), *args], out=out, err=err)
        except SystemExit as exc:  # argparse's own usage errors
            status = int(exc.code or 0)
        finally:
            sys.stdin = old_stdin
        return Result(status, out.getvalue(), err.getvalue())


@pytest.fixture
def cli(tmp_path: Path, store_url: str) -> Cli:
    run = Cli(tmp_path / "etc" / "antiforgery.toml")
    assert run("init", "--domain", "example.ac.uk", "--store-url", store_url).status == 0
    return run


def test_init_creates_private_config_key_file_and_database(tmp_path: Path) -> None:
    run = Cli(tmp_path / "antiforgery.toml")
    result = run("init", "--domain", "example.ac.uk")
    assert result.status == 0, result.err
    for name in ("antiforgery.toml", "keys.toml", "antiforgery.db"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    again = run("init")
    assert again.status == 0 and "keeping it" in again.out


def test_init_refuses_a_key_file_others_can_read(tmp_path: Path) -> None:
    run = Cli(tmp_path / "antiforgery.toml")
    run("init", "--domain", "example.ac.uk")
    os.chmod(tmp_path / "keys.toml", 0o644)
    result = run("init")
    assert result.status == 2 and "chmod 600" in result.err


def test_users_modes_and_listing(cli: Cli) -> None:
    assert cli("user", "add", "alice", "--address", "Alice@Example.ac.uk", "--mode", "testing").status == 0
    assert cli("user", "add", "bob", "--address", "bob@example.ac.uk").status == 0
    assert cli("user", "mode", "alice", "full").status == 0
    listing = cli("user", "list").out.splitlines()
    assert listing[1].split() == ["alice", "full", "alice@example.ac.uk"]
    assert listing[2].split() == ["bob", "off", "bob@example.ac.uk"]


def test_password_is_read_from_stdin_and_stored_hashed(cli: Cli, tmp_path: Path) -> None:
    result = cli("user", "add", "carol", "--address", "carol@example.ac.uk", "--password-stdin", stdin="s3cret!\n")
    assert result.status == 0
    assert "s3cret" not in result.out + result.err
    assert cli("user", "passwd", "carol", stdin="\n").status == 2


def test_aliases_single_and_multi_target(cli: Cli) -> None:
    cli("user", "add", "alice", "--address", "alice@example.ac.uk")
    single = cli("alias", "add", "webmaster@dept.example.ac.uk", "alice")
    multi = cli("alias", "add", "team@dept.example.ac.uk", "alice", "someone@elsewhere.org")
    assert "protected like its user" in single.out and "multi-target" in multi.out
    assert cli("alias", "list").out.splitlines() == [
        "team@dept.example.ac.uk -> alice, someone@elsewhere.org",
        "webmaster@dept.example.ac.uk -> alice",
    ]


def test_sign_then_verify_at_a_given_time(cli: Cli) -> None:
    signed = cli("sign", "alice@example.ac.uk", "--at", str(NOW)).out.strip()
    assert signed.startswith("alice=s") and signed.endswith("@example.ac.uk")
    assert cli("verify", signed, "--at", str(NOW)) == Result(0, "valid\n", "")
    assert cli("verify", signed, "--at", str(NOW + 8 * 86400)) == Result(1, "invalid: expired\n", "")
    assert cli("verify", "alice@example.ac.uk") == Result(1, "invalid: unsigned\n", "")


def test_prvs_format_verifies(cli: Cli) -> None:
    signed = cli("sign", "alice@example.ac.uk", "--format", "prvs", "--at", str(NOW)).out.strip()
    assert signed.startswith("prvs=0")
    assert cli("verify", signed, "--at", str(NOW)).out == "valid\n"


def test_fixed_tag_is_stable_and_revocable_only_for_its_user(cli: Cli) -> None:
    cli("user", "add", "alice", "--address", "alice@example.ac.uk")
    cli("user", "add", "bob", "--address", "bob@example.ac.uk")
    first = cli("sign", "alice@example.ac.uk", "--recipient", "list@lists.example.org").out.strip()
    again = cli("sign", "alice@example.ac.uk", "--recipient", "LIST@lists.example.org").out.strip()
    assert first == again and "=f" in first
    assert cli("verify", first, "--at", str(NOW + 400 * 86400)).out == "valid\n"
    assert cli("sign", "nobody@example.ac.uk", "--recipient", "list@lists.example.org").status == 2
    listing = cli("fixed", "list").out.split()
    assert listing[1:5] == ["alice", "list@lists.example.org", first, "active"]
    assert cli("fixed", "revoke", listing[0]).status == 0
    assert cli("verify", first) == Result(1, "invalid: revoked\n", "")
    assert cli("fixed", "list").out == "" and "revoked" in cli("fixed", "list", "--all").out
    assert cli("fixed", "revoke", "999").status == 2


def test_blacklisted_tag_no_longer_verifies_until_purged_after_expiry(cli: Cli) -> None:
    now = int(__import__("time").time())
    signed = cli("sign", "alice@example.ac.uk").out.strip()
    added = cli("blacklist", "add", signed, "--reason", "posted to a bug tracker")
    assert added.status == 0 and "until" in added.out
    assert cli("verify", signed) == Result(1, "invalid: blacklisted\n", "")
    assert signed.lower() in cli("blacklist", "list").out
    assert cli("blacklist", "purge", "--at", str(now)).out == "purged 0 expired entries\n"
    assert cli("blacklist", "purge", "--at", str(now + 9 * 86400)).out == "purged 1 expired entry\n"
    assert cli("blacklist", "list").out == ""


def test_blacklisting_an_unsigned_address_is_refused(cli: Cli) -> None:
    result = cli("blacklist", "add", "alice@example.ac.uk")
    assert result.status == 2 and "carries no tag" in result.err


def test_key_rotation_keeps_old_tags_valid_until_the_key_is_retired(cli: Cli) -> None:
    old = cli("sign", "alice@example.ac.uk", "--at", str(NOW)).out.strip()
    assert cli("keys", "rotate").status == 0
    new = cli("sign", "alice@example.ac.uk", "--at", str(NOW)).out.strip()
    assert new != old
    assert cli("verify", old, "--at", str(NOW)).status == 0
    listing = cli("keys", "list").out
    assert "signs and verifies" in listing and listing.count("verifies") == 2
    assert cli("keys", "retire", "1").status == 2  # the current key
    assert cli("keys", "retire", "0").status == 0
    assert cli("verify", old, "--at", str(NOW)).out == "invalid: unknown_key\n"


def test_import_reports_bad_rows_by_line_and_exits_2(cli: Cli, tmp_path: Path) -> None:
    csv_file = tmp_path / "users.csv"
    csv_file.write_text(
        "login,address,mode,addresses\n"
        "alice,alice@example.ac.uk,full,a.smith@example.ac.uk\n"
        "bob,bob@example.ac.uk,,\n"
        "carol,not-an-address,off,\n"
        "dave,dave@example.ac.uk,paranoid,\n"
        "alice,alice2@example.ac.uk,off,\n"
    )
    result = cli("import", str(csv_file))
    assert result.status == 2
    assert "imported 2 user(s), skipped 3" in result.out
    assert "line 4:" in result.err and "line 5: mode must be one of" in result.err and "line 6:" in result.err
    users = cli("user", "list").out
    assert "alice" in users and "bob" in users and "carol" not in users


def test_import_refuses_a_file_without_the_required_columns(cli: Cli, tmp_path: Path) -> None:
    csv_file = tmp_path / "users.csv"
    csv_file.write_text("name,email\nalice,alice@example.ac.uk\n")
    result = cli("import", str(csv_file))
    assert result.status == 2 and result.err.count("\n") == 1 and "login and address" in result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["user", "add", "alice", "--address", "not an address"], "address"),
        (["user", "mode", "nobody", "full"], "nobody"),
        (["sign", "a@b@example.ac.uk"], "not a valid mailbox"),
        (["sign", "x" * 60 + "@example.ac.uk"], "over the limit of 64"),
        (["sign", "alice@example.ac.uk", "--format", "prvs", "--recipient", "x@y.org"], "cannot be combined"),
        (["keys", "retire", "7"], "no key with id 7"),
        (["import", "/nonexistent.csv"], "No such file"),
    ],
)
def test_bad_input_is_one_line_on_stderr_with_status_2(cli: Cli, args: list[str], message: str) -> None:
    result = cli(*args)
    assert result.status == 2
    assert result.err.count("\n") == 1 and message in result.err, result.err
    assert "Traceback" not in result.err


def test_argument_errors_exit_2(cli: Cli) -> None:
    assert cli("verify", "x", "--at", "yesterday").status == 2
    assert cli("user", "mode", "alice", "paranoid").status == 2


def test_missing_configuration_and_unreachable_database_are_clear_errors(tmp_path: Path) -> None:
    missing = Cli(tmp_path / "none.toml")("user", "list")
    assert missing.status == 2 and "antiforgery init" in missing.err
    config = tmp_path / "bad.toml"
    config.write_text('[store]\nurl = "postgresql+psycopg://nobody@127.0.0.1:1/none"\n')
    down = Cli(config)("user", "list")
    assert down.status == 2 and down.err.startswith("antiforgery: error: database error:")
    assert "Traceback" not in down.err


def test_console_script_runs_without_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "antiforgery"
    result = subprocess.run(
        [str(script), "--config", str(tmp_path / "x.toml"), "verify", "a@b.org"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
