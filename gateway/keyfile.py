"""The signing secrets on disk: a small TOML file, mode 0600, replaced atomically.

Design invariant 9: secrets never reach logs or process lists, and are loaded from files nobody
else can read. A key file that group or others could read is refused, not merely warned about,
because anyone holding the secret can forge every opted-in user's mail.
"""

from __future__ import annotations

import os
import secrets
import stat
import tomllib
from pathlib import Path

from signed_sender import Key, Keyring, KeyringError

SECRET_BYTES = 32


class KeyFileError(ValueError):
    """The key file is missing, unreadable, too permissive or malformed; the message says which."""


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def _read_private(path: Path, what: str, create_hint: str) -> bytes:
    """The file's bytes, refused if group or others could read or write it (checked on the open fd)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no {what} ({create_hint})") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open {what}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path}: {what} is accessible to group or others (mode {stat.S_IMODE(mode):04o}); "
                "run 'chmod 600' on it"
            )
        return handle.read()


def load(path: Path) -> Keyring:
    text = _read_private(path, "key file", "create one with 'antiforgery init'")
    try:
        raw = tomllib.loads(text.decode("utf-8"))
        keys = [
            Key(int(item["id"]), bytes.fromhex(item["secret"]), int(item.get("created", 0)))
            for item in raw.get("key", [])
        ]
        return Keyring(keys, int(raw["current"]))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        # KeyringError is a ValueError; its message never contains secret material.
        detail = str(exc) if isinstance(exc, KeyringError) else type(exc).__name__
        raise KeyFileError(f"{path}: malformed key file ({detail})") from None


MIN_TOKEN_LENGTH = 32


def load_token(path: Path) -> bytes:
    """A bearer token (the webmail's, for POST /v1/sign): one line of printable ASCII, mode 0600.

    The same rules as the key file: whoever holds the token can have any opted-in user's sender
    signed, so it is as secret as a signing key.
    """
    raw = _read_private(path, "token file", f"write {MIN_TOKEN_LENGTH} or more random characters to it, mode 0600")
    token = raw.strip()
    if len(token) < MIN_TOKEN_LENGTH or not all(0x21 <= b <= 0x7E for b in token):
        raise KeyFileError(
            f"{path}: the token must be one line of at least {MIN_TOKEN_LENGTH} printable ASCII characters "
            "(e.g. 'openssl rand -hex 32')"
        )
    return token


def dump(keyring: Keyring) -> str:
    lines = [
        "# antiforgery signing keys. Keep this file secret (mode 0600) and identical on every node.",
        "# Only the current key signs; every key listed here verifies.",
        f"current = {keyring.current.id}",
    ]
    for key_id in keyring:
        key = keyring[key_id]
        lines += ["", "[[key]]", f"id = {key.id}", f"created = {key.created}", f'secret = "{key.secret.hex()}"']
    return "\n".join(lines) + "\n"


def save(path: Path, keyring: Keyring) -> None:
    """Write a new key file beside the old one, then rename: a crash never leaves half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(dump(keyring))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create(path: Path, now: int) -> Keyring:
    """A fresh keyring with one key; refuses to overwrite an existing key file."""
    if path.exists():
        raise KeyFileError(f"{path}: a key file already exists; use 'antiforgery keys rotate'")
    keyring = Keyring([Key(0, new_secret(), now)], 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save(path, keyring)
    return keyring
