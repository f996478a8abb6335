"""The session secret: the key that signs every session cookie, read from a private file.

Whoever holds it can forge a session for any user, admins included, so it is kept like the
signing key file (design invariant 9): refused when group or others can read it, never logged.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

MIN_SECRET_LENGTH = 32


class SecretFileError(ValueError):
    """The secret file is missing, readable by others, or too short; the message says which."""


def load_secret(path: Path) -> bytes:
    """The secret's bytes (surrounding white space removed), checked on the opened file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise SecretFileError(f"{path}: no web session secret (create it with 'antiforgery init')") from None
    except OSError as exc:
        raise SecretFileError(f"{path}: cannot open the web session secret: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SecretFileError(
                f"{path}: the web session secret is accessible to group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run 'chmod 600' on it"
            )
        secret = handle.read().strip()
    if len(secret) < MIN_SECRET_LENGTH:
        raise SecretFileError(f"{path}: the web session secret must be at least {MIN_SECRET_LENGTH} characters")
    return secret
