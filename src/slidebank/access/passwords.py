"""Password hashing with argon2id (argon2-cffi's defaults follow RFC 9106's recommendations)."""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from slidebank.errors import InvalidInput

MIN_LENGTH = 12
MAX_LENGTH = 1024  # bounds the work an attacker can ask of the hasher
_HASHER = PasswordHasher()


@cache
def _dummy() -> str:
    """Verified against when the account does not exist, so that a miss takes as long as a
    hit. Made at the first sign-in, not at import: one hash takes argon2's 64 MiB."""
    return _HASHER.hash("slidebank-no-such-account")


def check_new_password(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"password: at least {MIN_LENGTH} characters, got {len(password)}")
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"password: at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    check_new_password(password)
    return _HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (None: no such account or no local password;
    the same work is done either way)."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(stored or _dummy(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return _HASHER.check_needs_rehash(stored)
