"""The ingest pipeline for one slide, and for many.

Each step is a small function in its own module; this module only orders them and keeps the
promise that a failure at any step leaves no catalogue row and no stored file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import IntegrityError

from slidebank.catalog import queries
from slidebank.catalog.database import Catalogue
from slidebank.catalog.entries import DatasetEntry, StoredFile
from slidebank.config import Settings
from slidebank.errors import SlidebankError, StorageError
from slidebank.ingest.describe import describe
from slidebank.ingest.discovery import SlideSource
from slidebank.ingest.sidecar import Sidecar
from slidebank.ingest.store import stage_copy
from slidebank.ingest.thumbnail import write_thumbnail
from slidebank.ingest.validate import check_dimensions, validate
from slidebank.slides import SlideReader, open_slide
from slidebank.storage import LocalBlobStore, Staging

Status = Literal["ingested", "duplicate", "failed"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one slide source."""

    source: str
    status: Status
    id: str | None = None
    reason: str | None = None
    format: str | None = None
    size_bytes: int = 0

    def as_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "id": self.id,
            "status": self.status,
            "reason": self.reason,
            "format": self.format,
        }


@dataclass
class IngestContext:
    settings: Settings
    catalogue: Catalogue
    store: LocalBlobStore
    dataset: DatasetEntry
    sidecar: Sidecar | None = None


def ingest_source(
    context: IngestContext,
    source: SlideSource,
    progress: Callable[[int], None] | None = None,
) -> Outcome:
    """Run every step for one slide; any failure becomes a ``failed`` outcome."""
    try:
        return _ingest(context, source, progress)
    except SlidebankError as exc:
        return Outcome(source.display, "failed", reason=_reason(str(exc), source))
    except MemoryError:
        return Outcome(source.display, "failed", reason="ran out of memory reading the slide")


def _ingest(
    context: IngestContext, source: SlideSource, progress: Callable[[int], None] | None
) -> Outcome:
    settings, store = context.settings, context.store
    entry = None
    if context.sidecar is not None:
        entry = context.sidecar.entry_for(source.files[0].name, _folder_name(source))
    with open_slide(source.files) as reader:
        check_dimensions(reader, source.display)
        with store.stage() as staging:
            checksum, files = _validate_while_copying(context, source, reader, staging, progress)
            with context.catalogue.reading() as session:
                known = queries.image_by_checksum(session, checksum)
            if known is not None:
                return _duplicate(source, known.public_id, reader.info.format)
            scan = describe(reader, checksum, files, source.display)
            write_thumbnail(reader, staging.thumbnail_path, settings.thumbnail_size)
            existed = store.exists(scan.storage_key)
            store.commit(staging, scan.storage_key)
    try:
        with context.catalogue.transaction() as session:
            dataset = queries.ensure_dataset(session, context.dataset)
            image = queries.add_scanned_slide(session, dataset, scan, entry)
            public_id = image.public_id
    except IntegrityError as exc:
        # Another ingest registered the same content between our check and our commit.
        with context.catalogue.reading() as session:
            known = queries.image_by_checksum(session, checksum)
        if known is not None:
            return _duplicate(source, known.public_id, scan.format)
        _forget(store, scan.storage_key, existed)
        raise StorageError(f"catalogue refused the slide: {exc.orig}") from exc
    except BaseException:
        _forget(store, scan.storage_key, existed)
        raise
    return Outcome(
        source.display, "ingested", id=public_id, format=scan.format, size_bytes=scan.size_bytes
    )


class _CopyCancelled(Exception):
    """Validation failed while the copy was running: stop copying."""


def _validate_while_copying(
    context: IngestContext,
    source: SlideSource,
    reader: SlideReader,
    staging: Staging,
    progress: Callable[[int], None] | None,
) -> tuple[str, tuple[StoredFile, ...]]:
    """Validate on one core while hashing and copying on the other.

    Decoding tiles is CPU work in OpenSlide or libjpeg-turbo and copying is hashing plus I/O;
    both release the GIL, so on two cores the step costs the longer of the two, not the sum.
    """
    failed = threading.Event()

    def validate_or_flag() -> None:
        try:
            validate(reader, source.display, context.settings.validation)
        except BaseException:
            failed.set()
            raise

    def copied(count: int) -> None:
        if failed.is_set():
            raise _CopyCancelled
        if progress is not None:
            progress(count)

    with ThreadPoolExecutor(1, thread_name_prefix="slidebank-validate") as pool:
        validation = pool.submit(validate_or_flag)
        try:
            result = stage_copy(source, staging, context.settings.copy_chunk_bytes, copied)
        except _CopyCancelled:
            validation.result()  # raises the validation error
            raise
        except BaseException:
            failed.set()
            wait([validation])
            raise
        validation.result()
    return result


def _forget(store: LocalBlobStore, key: str, existed: bool) -> None:
    """Remove a just-committed object that no catalogue row will point to."""
    if not existed:
        store.delete(key)


def _duplicate(source: SlideSource, public_id: str, fmt: str) -> Outcome:
    return Outcome(
        source.display,
        "duplicate",
        id=public_id,
        reason=f"same content as slide {public_id}",
        format=fmt,
    )


def _folder_name(source: SlideSource) -> str:
    return source.files[0].parent.name if len(source.files) > 1 else source.files[0].name


def _reason(message: str, source: SlideSource) -> str:
    """The error message without the leading path (the outcome names the source already)."""
    for prefix in (source.display, str(source.files[0]), str(source.files[0].parent)):
        if message.startswith(prefix + ": "):
            return message[len(prefix) + 2 :]
    return message
