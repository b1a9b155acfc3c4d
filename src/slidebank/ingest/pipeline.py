"""The ingest pipeline for one slide, and for many.

Each step is a small function in its own module; this module only orders them and keeps the
promise that a failure at any step leaves no catalogue row and no stored file.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.exc import IntegrityError

from slidebank.catalog import dicom_queries, queries
from slidebank.catalog.database import Catalogue
from slidebank.catalog.entries import DatasetEntry, ScanEntry, SlideEntry, StoredFile
from slidebank.config import Settings
from slidebank.deid.convert import preload_converter
from slidebank.deid.identifiers import IdentifyingValue
from slidebank.deid.pseudonyms import repository_key
from slidebank.errors import SlidebankError, StorageError, without_location
from slidebank.ingest.deidentify import (
    Converted,
    check_sidecar_text,
    convert_source,
    deidentify,
    source_values,
)
from slidebank.ingest.describe import describe
from slidebank.ingest.dicom_index import describe_instances
from slidebank.ingest.discovery import SlideSource
from slidebank.ingest.sidecar import Sidecar
from slidebank.ingest.store import Destination, stage_copy
from slidebank.ingest.thumbnail import write_thumbnail
from slidebank.ingest.validate import check_dimensions, validate
from slidebank.slides import SlideReader, open_slide
from slidebank.slides.sniff import is_dicom
from slidebank.storage import BlobStore, Staging

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
    store: BlobStore
    dataset: DatasetEntry
    sidecar: Sidecar | None = None
    _key: bytes | None = None

    def key(self) -> bytes:
        """The repository's pseudonym key, read once per batch."""
        if self._key is None:
            self._key = repository_key(self.settings)
        return self._key


def ingest_source(
    context: IngestContext,
    source: SlideSource,
    progress: Callable[[int], None] | None = None,
) -> Outcome:
    """Run every step for one slide; any failure becomes a ``failed`` outcome."""
    try:
        return _ingest(context, source, progress)
    except SlidebankError as exc:
        return Outcome(source.display, "failed", reason=without_location(str(exc), source.files))
    except MemoryError:
        return Outcome(source.display, "failed", reason="ran out of memory reading the slide")
    except Exception as exc:
        # A library failing in a way we did not map must not end the batch; the message
        # keeps the exception's type so that the report can be acted on.
        return Outcome(source.display, "failed", reason=f"unexpected {type(exc).__name__}: {exc}")


def _ingest(
    context: IngestContext, source: SlideSource, progress: Callable[[int], None] | None
) -> Outcome:
    settings, store = context.settings, context.store
    entry = None
    if context.sidecar is not None:
        entry = context.sidecar.entry_for(
            source.display, source.files[0].name, _folder_name(source)
        )
    with open_slide(source.files) as reader:
        check_dimensions(reader, source.display)
        found = _checked_sidecar_text(context, source, reader, entry)
        with store.stage() as staging:
            destination: Destination = "content"
            loader = None
            converted = None
            if settings.stored_form == "dicom":
                destination = "original" if settings.keep_originals else None
                if not any(is_dicom(path) for path in source.files):
                    loader = preload_converter()
            if loader is not None and not _possibly_registered(context, reader):
                (checksum, files), converted = _converted_while_hashing(
                    context, source, reader, staging, progress, destination, loader, entry, found
                )
            else:
                try:
                    checksum, files = _validate_while_copying(
                        context, source, reader, staging, progress, destination
                    )
                finally:
                    # Before anything else imports wsidicom: two threads importing it at
                    # once can meet a half-initialised module.
                    if loader is not None:
                        loader.join()
            known = _registered(context, checksum)
            if known is not None:
                return _duplicate(source, known, reader.info.format)
            entry, scan = _stored_form(
                context, source, reader, staging, entry, checksum, files, found, converted
            )
            store.prepare(staging)
            with store.registration_lock():
                # Under the lock no other ingest commits or registers, so an object this
                # run created is referenced by no row but the one it is about to write.
                if store.exists(scan.storage_key) and _registered(context, checksum) is None:
                    # Left by a run killed before its catalogue commit. Its converted files
                    # differ from ours (new UIDs), so ours replace it rather than adopt it.
                    store.delete(scan.storage_key)
                created = store.commit(staging, scan.storage_key)
                try:
                    public_id = _register(context, scan, entry)
                except BaseException:
                    if created:
                        store.delete(scan.storage_key)
                    raise
    if public_id is None:
        known = _registered(context, checksum)
        if known is None:
            raise StorageError(f"catalogue refused the slide with checksum {checksum}")
        return _duplicate(source, known, scan.format)
    return Outcome(
        source.display, "ingested", id=public_id, format=scan.format, size_bytes=scan.size_bytes
    )


def _stored_form(
    context: IngestContext,
    source: SlideSource,
    reader: SlideReader,
    staging: Staging,
    entry: SlideEntry | None,
    checksum: str,
    files: tuple[StoredFile, ...],
    found: list[IdentifyingValue] | None,
    converted: Converted | None = None,
) -> tuple[SlideEntry | None, ScanEntry]:
    """Write what is stored beside the content (the de-identified DICOM and its report, or
    nothing more for originals) and describe it: the sidecar entry and the scan to register.
    ``converted``: the conversion, when it ran while the source was hashed."""
    settings = context.settings
    if settings.stored_form != "dicom":
        write_thumbnail(reader, staging.thumbnail_path, settings.thumbnail_size)
        return entry, describe(reader, checksum, files, source.display)
    done = deidentify(
        source, reader, staging, settings, context.key(), entry, checksum, found, converted
    )
    with open_slide(tuple(staging.content / f.name for f in done.files)) as stored:
        scan = describe(stored, checksum, done.files, done.names.slide)
        write_thumbnail(stored, staging.thumbnail_path, settings.thumbnail_size)
    return done.entry, _with_source_format(scan, reader)


def _checked_sidecar_text(
    context: IngestContext, source: SlideSource, reader: SlideReader, entry: SlideEntry | None
) -> list[IdentifyingValue] | None:
    """Refuse the slide if its sidecar text repeats one of its identifying values, before
    any byte is hashed or staged (even a duplicate's: the sidecar is wrong either way).
    Returns those values for the de-identify step; None when there was no text to check.

    Only for the de-identified stored form (``check_sidecar_text`` says why)."""
    if context.settings.stored_form != "dicom" or context.sidecar is None:
        return None
    fields = context.sidecar.text_fields(entry)
    if not fields:
        return None
    found = source_values(source, reader, entry)
    check_sidecar_text(fields, found, context.sidecar.path)
    return found


def _with_source_format(scan: ScanEntry, source: SlideReader) -> ScanEntry:
    """The stored DICOM's facts, with the source's vendor and format (neither identifies)."""
    properties = dict(scan.properties)
    properties[queries.SOURCE_FORMAT] = source.info.format
    return dataclasses.replace(
        scan,
        vendor=source.info.vendor or scan.vendor,
        objective_power=scan.objective_power or source.info.objective_power,
        properties=properties,
    )


def _possibly_registered(context: IngestContext, reader: SlideReader) -> bool:
    """Whether a registered slide has the source's dimensions: then it may be this one, and
    the source is hashed before any conversion, so that a duplicate costs no conversion."""
    width, height = reader.info.dimensions
    with context.catalogue.reading() as session:
        return queries.has_image_of_size(session, width, height)


def _converted_while_hashing(
    context: IngestContext,
    source: SlideSource,
    reader: SlideReader,
    staging: Staging,
    progress: Callable[[int], None] | None,
    destination: Destination,
    loader: threading.Thread,
    entry: SlideEntry | None,
    found: list[IdentifyingValue] | None,
) -> tuple[tuple[str, tuple[StoredFile, ...]], Converted]:
    """Hash and validate the source on another thread while it is converted on this one.

    The conversion does not wait for the checksum: the pseudonyms derived from it go into
    the converted headers as stand-ins, replaced before the proof (``deidentify``). On two
    cores the conversion leaves part of the second one idle (its writer threads wait on the
    disk), and the hash, which releases the GIL, fills it: the ingest of the 2 GB SVS of
    the benchmark no longer waits for its hash. A duplicate is recognised only after its
    conversion, so the caller does this only for a slide whose dimensions no registered
    slide has (``_possibly_registered``)."""
    with ThreadPoolExecutor(1, thread_name_prefix="slidebank-hash") as pool:
        checked = pool.submit(
            _hash_then_validate, context, source, reader, staging, progress, destination
        )
        try:
            loader.join()  # wsidicomizer imported
            converted = convert_source(
                source, reader, staging, context.settings, context.key(), entry, None, found
            )
        except BaseException:
            wait([checked])
            refused = checked.exception()
            if isinstance(refused, SlidebankError):
                # Validation says what is wrong with the source; the conversion of a broken
                # source fails in the converter's words.
                raise refused from None
            raise
        return checked.result(), converted


def _hash_then_validate(
    context: IngestContext,
    source: SlideSource,
    reader: SlideReader,
    staging: Staging,
    progress: Callable[[int], None] | None,
    destination: Destination,
) -> tuple[str, tuple[StoredFile, ...]]:
    """The source's checksum (its files hashed, and copied if originals are kept), then its
    validation.

    One after the other, on one thread beside the conversion: validation's many small
    reads, each giving up the GIL, slow the hash and the conversion when the three run at
    once (the 2 GB SVS: 7.3-8.4 s against 7.7-9.1 s for the whole command, four runs each)."""
    result = stage_copy(source, staging, context.settings.copy_chunk_bytes, progress, destination)
    validate(reader, source.display, context.settings.validation)
    return result


def _registered(context: IngestContext, checksum: str) -> str | None:
    """The public id of the slide with this content, if the catalogue has one."""
    with context.catalogue.reading() as session:
        known = queries.image_by_checksum(session, checksum)
        return known.public_id if known is not None else None


def _register(context: IngestContext, scan: ScanEntry, entry: SlideEntry | None) -> str | None:
    """One transaction; None when the same content was registered meanwhile (a duplicate)."""
    # The DICOMweb index of the stored files (none for non-DICOM slides), read before the
    # transaction so that it holds no lock while reading headers.
    instances = describe_instances(context.store.content_dir(scan.storage_key))
    try:
        with context.catalogue.transaction() as session:
            dataset = queries.ensure_dataset(session, context.dataset)
            image = queries.add_scanned_slide(session, dataset, scan, entry)
            dicom_queries.add_instances(session, image, instances)
            return image.public_id
    except IntegrityError:
        if _registered(context, scan.checksum) is not None:
            return None
        raise


class _CopyCancelled(Exception):
    """Validation failed while the copy was running: stop copying."""


def _validate_while_copying(
    context: IngestContext,
    source: SlideSource,
    reader: SlideReader,
    staging: Staging,
    progress: Callable[[int], None] | None,
    destination: Destination,
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
            result = stage_copy(
                source, staging, context.settings.copy_chunk_bytes, copied, destination
            )
        except _CopyCancelled:
            validation.result()  # raises the validation error
            raise
        except BaseException:
            failed.set()
            wait([validation])
            raise
        validation.result()
    return result


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
