"""Password hashes for the web pages and SMTP AUTH: Argon2id (RFC 9106), a memory-hard KDF.

The hash string carries its own parameters and salt, so the cost can be raised later:
`needs_rehash` says when a stored hash was made with weaker parameters than the current ones,
and the caller stores a fresh hash after the next successful login.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2-cffi's defaults are RFC 9106's second recommended option (Argon2id, 64 MiB, t=3, p=4).
_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    """Hash a password for storage; an empty password is refused (ValueError)."""
    if not password:
        raise ValueError("a password must not be empty")
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True if `password` matches `password_hash`; False on mismatch or an unusable stored hash."""
    if not password_hash or not password:
        return False
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True if the hash was made with other parameters than the current ones (or is unusable)."""
    try:
        return _HASHER.check_needs_rehash(password_hash)
    except (InvalidHashError, ValueError):
        return True
