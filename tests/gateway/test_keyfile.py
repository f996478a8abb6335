"""The key file: secret, mode 0600, atomic, and refused when others can read it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway import keyfile
from gateway.keyfile import KeyFileError


def test_created_key_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    ring = keyfile.create(path, now=1_790_000_000)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = keyfile.load(path)
    assert loaded.current.id == ring.current.id and loaded.current.secret == ring.current.secret
    assert len(ring.current.secret) == 32


def test_rotation_saved_keeps_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    ring = keyfile.create(path, now=1)
    keyfile.save(path, ring.rotated(keyfile.new_secret(), created=2))
    loaded = keyfile.load(path)
    assert list(loaded) == [0, 1] and loaded.current.id == 1
    assert loaded[0].secret == ring[0].secret
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keys.toml"]


def test_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    keyfile.create(path, now=1)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        keyfile.load(path)


def test_existing_key_file_is_never_overwritten_by_create(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    keyfile.create(path, now=1)
    with pytest.raises(KeyFileError, match="already exists"):
        keyfile.create(path, now=2)


def test_malformed_key_file_error_does_not_echo_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('current = 0\n[[key]]\nid = 0\nsecret = "abcd"\n')
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileError) as info:
        keyfile.load(path)
    assert "abcd" not in str(info.value) and "shorter than 16 bytes" in str(info.value)


def test_missing_key_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="antiforgery init"):
        keyfile.load(tmp_path / "keys.toml")
