"""The error tree. Every error Slidebank raises on purpose is one of these.

    SlidebankError
    ├── NotFound            (also LookupError)   a slide, dataset or file that is not there
    ├── Forbidden           (also PermissionError) the principal may not do this
    │   └── SignInRequired                        nobody is signed in, or the credentials are bad
    ├── InvalidInput        (also ValueError)    a value, file or field that is wrong
    │   ├── UnsupportedFormat                     a file that is not a slide Slidebank reads
    │   └── CorruptSlide                          a slide that opens but cannot be read in full
    ├── Conflict                                  the thing exists already / state disagrees
    └── StorageError        (also OSError)       the blob store or catalogue failed

Library errors are mapped to these with ``raise ... from exc`` at the edge where they occur,
so that messages name the file or field and say what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class SlidebankError(Exception):
    """Root of every error Slidebank raises on purpose."""


class NotFound(SlidebankError, LookupError):
    """The thing asked for does not exist (or may not be known to exist)."""


def no_such_slide(public_id: str) -> NotFound:
    """The one answer for a slide that does not exist, and for one the asker may not know
    exists: the same words, so that a refusal tells nothing of what is stored."""
    return NotFound(f"no slide with id {public_id!r}")


class Forbidden(SlidebankError, PermissionError):
    """The principal may not do this."""


class SignInRequired(Forbidden):
    """No one is signed in, or the session or token presented is unknown, expired or revoked."""


class InvalidInput(SlidebankError, ValueError):
    """A value, file or field is wrong; the message says which and why."""


class UnsupportedFormat(InvalidInput):
    """The file is not a whole-slide image in a format Slidebank reads."""


class CorruptSlide(InvalidInput):
    """The slide opens but some of its content cannot be read."""


class Conflict(SlidebankError):
    """The operation disagrees with what is already there."""


class StorageError(SlidebankError, OSError):
    """The blob store or the catalogue could not do what was asked."""


def without_location(message: str, paths: Path | Sequence[Path]) -> str:
    """``message`` without a leading "PATH: " naming one of ``paths`` or its folder.

    Reports that already name the file (an ingest table, a JSON record) show the reason alone.
    """
    candidates: list[str] = []
    for path in (paths,) if isinstance(paths, Path) else paths:
        candidates += [str(path), str(path.parent)]
    for prefix in sorted(candidates, key=len, reverse=True):
        if message.startswith(prefix + ": "):
            return message[len(prefix) + 2 :]
    return message
