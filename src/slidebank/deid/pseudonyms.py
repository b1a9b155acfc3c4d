"""Keyed pseudonyms: the same source identifier always gives the same pseudonym within one
repository (one key), and without the key a pseudonym cannot be traced back.

HMAC-SHA256 is the keyed one-way function; the rest is formatting for the places a
pseudonym goes (DICOM SH values hold 16 characters, UIDs only digits and dots).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from datetime import timedelta
from pathlib import Path

from slidebank.config import Settings
from slidebank.errors import StorageError

KEY_BYTES = 32
# Dates are shifted back by 1 to 10 years, the same for every date of one case, so that
# intervals within a case survive and no date is kept.
SHIFT_DAYS = (365, 3650)


class Pseudonymizer:
    """Derives pseudonyms, UIDs and date shifts from one secret key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a pseudonym key needs at least 16 bytes")
        self._key = key

    def _digest(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, kind: str, value: str) -> str:
        """``C-`` + 12 letters/digits for a case, ``S-`` for a slide, ``P-`` for a patient…

        Short enough for DICOM SH (16 characters)."""
        code = base64.b32encode(self._digest(kind, value)).decode().rstrip("=")[:12]
        return f"{kind[:1].upper()}-{code}"

    def uid(self, value: str) -> str:
        """A UID under the UUID-derived root 2.25 (PS3.5 B.2): at most 44 characters."""
        number = int.from_bytes(self._digest("uid", value)[:16], "big")
        return f"2.25.{number}"

    def date_shift(self, case: str) -> timedelta:
        low, high = SHIFT_DAYS
        span = high - low + 1
        return timedelta(days=low + int.from_bytes(self._digest("shift", case)[:4], "big") % span)


def repository_key(settings: Settings) -> bytes:
    """The configured key, or the repository's own (created on first use)."""
    if settings.pseudonym_key is not None:
        return settings.pseudonym_key.get_secret_value().encode()
    return load_or_create_key(settings.home / "keys" / "pseudonym.key")


def load_or_create_key(path: Path) -> bytes:
    """The repository's key file, created (readable by the owner only) when missing."""
    try:
        if not path.exists():
            _create_key(path)
        key = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"{path}: cannot read or create the pseudonym key ({exc})") from exc
    if len(key) < 16:
        raise StorageError(f"{path}: pseudonym key is shorter than 16 bytes")
    return key


def _create_key(path: Path) -> None:
    """Write a new key beside ``path`` and link it into place: of two processes creating
    the key at once, one wins and the other reads the winner's, never a file still being
    written (an exclusive create of ``path`` itself let a reader find it empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    try:
        with open(draft, "xb", opener=_owner_only) as out:
            out.write(secrets.token_bytes(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())  # pseudonyms change for good if the key is lost
        try:
            os.link(draft, path)
        except FileExistsError:
            return
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    finally:
        draft.unlink(missing_ok=True)


def _owner_only(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)
