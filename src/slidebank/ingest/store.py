"""Store step: copy a slide's files into staging while hashing them, in one read pass."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Literal

from slidebank.catalog.entries import StoredFile
from slidebank.ingest.discovery import SlideSource
from slidebank.storage import Staging, copy_and_hash, hash_file

Destination = Literal["content", "original", None]


def stage_copy(
    source: SlideSource,
    staging: Staging,
    chunk_bytes: int,
    progress: Callable[[int], None] | None = None,
    destination: Destination = "content",
) -> tuple[str, tuple[StoredFile, ...]]:
    """Copy every file into ``staging`` (as the stored content, as kept originals, or not at
    all: hashed only); return the slide's checksum and its files."""
    stored = []
    for path, name in zip(source.files, source.names, strict=True):
        if destination == "content":
            digest, size = copy_and_hash(path, staging.content_path(name), chunk_bytes, progress)
        elif destination == "original":
            digest, size = copy_and_hash(path, staging.original_path(name), chunk_bytes, progress)
        else:
            digest, size = hash_file(path, chunk_bytes, progress)
        stored.append(StoredFile(name=name, original=path.name, sha256=digest, size=size))
    return slide_checksum(stored, source.names_matter), tuple(stored)


def slide_checksum(files: list[StoredFile], names_matter: bool) -> str:
    """SHA-256 of a one-file slide; for several files, of their sorted checksums.

    A one-file slide's checksum equals ``sha256sum`` of the file. For DICOM instances the
    file names carry no meaning, so renamed copies are still recognised as duplicates; for
    MRXS and VMS, whose files refer to each other by name, the names count too.
    """
    if len(files) == 1:
        return files[0].sha256
    lines = sorted(f"{f.sha256} {f.name if names_matter else ''}\n" for f in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()
