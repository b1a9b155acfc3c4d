"""Conversion of one source slide into de-identified DICOM WSI files in a folder.

Scanner files go through wsidicomizer (stored JPEG tiles of SVS, NDPI and Philips TIFF are
passed through; other sources are transcoded at the configured quality) without the label,
without the overview unless asked, and without the confidential metadata it would carry
over; our pseudonyms replace the identifiers and the Basic Profile runs on every dataset it
writes (none of its dates is the source's, so none is shifted), and the moment wsidicom
stamps on each file is overwritten with the profile's dummies. DICOM sources keep their
frames byte for byte: each instance's header goes through the same profile and its pixel
data is copied after it.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pydicom.config
from pydicom import Dataset, FileMetaDataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from slidebank.deid.profile import (
    DUMMIES,
    DUMMY_TIME_FRACTION,
    ProfileReport,
    Pseudonyms,
    deidentify_dataset,
)
from slidebank.deid.pseudonyms import Pseudonymizer
from slidebank.errors import CorruptSlide, UnsupportedFormat
from slidebank.slides.sniff import is_dicom

COPY_CHUNK = 8 * 1024 * 1024
# Image types of instances that show the physical slide (its paper label, handwriting,
# barcode) rather than tissue.
LABEL_TYPES = {"LABEL"}
OVERVIEW_TYPES = {"OVERVIEW", "REGIONLOCALIZER"}
# wsidicomizer's sources in the order tried: opentile passes stored tiles through;
# tiffslide and OpenSlide read what opentile does not, transcoding.
SOURCES = ("opentile", "tiffslide", "openslide")
# The transcoding sources, by name: their levels can be chosen (``_dyadic_levels_only``).
PIXEL_SOURCES = {
    "tiffslide": ("wsidicomizer.sources", "TiffSlideSource"),
    "openslide": ("wsidicomizer.extras.openslide", "OpenSlideSource"),
}
# The extended offset table: 64-bit offsets, so a level may exceed 4 GiB (the basic one
# cannot), and readers find any frame without scanning the item headers.
OFFSET_TABLE = "eot"
# When stored tiles are passed through (no level needs transcoding), wsidicomizer's work is
# Python moving bytes (reads, queues, one write per tile), held by the GIL: one worker is
# faster than two (4.4 s against 4.75 s for the 2 GB SVS on 2 cores) and leaves the other
# core to the rest of the ingest. Transcoding keeps ConversionOptions.workers: JPEG encoding
# runs outside the GIL.
PASSTHROUGH_WORKERS = 1
# Tiles per batch a worker reads and queues when passing through, unless a level's source
# asks for more (an NDPI level stored as one frame asks for a whole row). Left to the
# source, SVS asks for 1 tile (wsidicom makes it 2), and the per-batch overhead of
# wsidicom's thread pipeline (futures, queues) made the 2 GB SVS convert in 10-20 s instead
# of about 4 s. Larger batches cost memory (queued batches, below). Ingest of the 2 GB SVS with
# 16/32/64 tiles and queues of 100 batches: 10.3/9.8/9.3 s, peak RSS 310/350/460 MB.
# Transcoding sources keep their own batch
# size: there a batch is decoded pixels (32 decoded 512 px tiles are 25 MB).
PASSTHROUGH_CHUNK_TILES = 32
# Batches each level's queue may hold (wsidicom's default is 100). Writing is the slowest
# stage, so the queues stay full: ingest of the 1.8 GB SVS of the tiles benchmark peaked at
# 344-352 MB with 100 and 275 MB with 4, 8 or 16, in the same time (10-17 s, noisy).
QUEUED_BATCHES = 8
# How often converted files are written back to disk while the conversion runs.
WRITE_BACK_SECONDS = 0.5


@dataclass(frozen=True)
class ConversionOptions:
    known_values: tuple[str, ...] = ()
    """Identifying values of the source, cleaned from any text attribute left."""
    keep_overview: bool = False
    jpeg_quality: int = 90
    workers: int = 2


@dataclass
class Conversion:
    """What a conversion wrote and what it left out."""

    files: list[Path] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    """Image types left out, with the source file's position (never its name)."""
    profile: ProfileReport = field(default_factory=ProfileReport)
    method: str = ""


def convert(
    files: tuple[Path, ...],
    target: Path,
    names: Pseudonyms,
    pseudonymizer: Pseudonymizer,
    options: ConversionOptions,
) -> Conversion:
    """Write the de-identified DICOM instances of the slide in ``files`` into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    with _writing_back(target):
        if all(is_dicom(path) for path in files):
            result = _rewrite_dicom(files, target, names, pseudonymizer, options)
        else:
            result = _dicomize(files[0], target, names, pseudonymizer, options)
    for path in result.files:
        _fsync(path)  # little is left to write by now
    return result


def _rewrite_dicom(
    files: tuple[Path, ...],
    target: Path,
    names: Pseudonyms,
    pseudonymizer: Pseudonymizer,
    options: ConversionOptions,
) -> Conversion:
    result = Conversion(method="DICOM headers de-identified, frames copied byte for byte")
    left_out = LABEL_TYPES | (set() if options.keep_overview else OVERVIEW_TYPES)
    for position, path in enumerate(files, start=1):
        with path.open("rb") as source:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    dataset = pydicom.dcmread(source, stop_before_pixels=True)
            except Exception as exc:  # pydicom raises many kinds for malformed headers
                raise CorruptSlide(f"{path}: unreadable DICOM header ({exc})") from exc
            kinds = {str(value).upper() for value in dataset.get("ImageType", [])}
            if kinds & left_out:
                result.excluded.append(
                    f"instance {position}: {', '.join(sorted(kinds & left_out))}"
                )
                continue
            pixels_at = source.tell()
            result.profile.merge(
                deidentify_dataset(dataset, names, pseudonymizer, known_values=options.known_values)
            )
            dataset.file_meta = _fresh_file_meta(dataset)
            out_path = target / f"{dataset.SOPInstanceUID}.dcm"
            with out_path.open("xb") as out:
                dataset.save_as(out, enforce_file_format=True)
                source.seek(pixels_at)
                shutil.copyfileobj(source, out, COPY_CHUNK)
        result.files.append(out_path)
    if not result.files:
        raise UnsupportedFormat(
            f"{files[0].parent}: no image instance is left after de-identification"
        )
    return result


def _dicomize(
    path: Path,
    target: Path,
    names: Pseudonyms,
    pseudonymizer: Pseudonymizer,
    options: ConversionOptions,
) -> Conversion:
    from wsidicom.codec import JpegSettings
    from wsidicom.metadata import (
        CallableUidGenerator,
        Patient,
        PatientDeIdentification,
        Slide,
        Study,
    )

    with _pydicom_validation_kept():
        from wsidicomizer import WsiDicomizer
        from wsidicomizer.metadata import WsiDicomizerMetadata
        from wsidicomizer.wsidicomizer import SourceIdentifier

    from slidebank.deid.tile_rows import read_tiles_directly

    report = ProfileReport()

    def post_process(dataset: Dataset, metadata: Any) -> Dataset:
        # UIDs are new already (wsidicomizer makes them); replacing them here would break
        # the links it writes between instances. No date or time here is the source's
        # (include_confidential=False withholds them; AcquisitionDateTime is wsidicom's
        # epoch placeholder): none is shifted, whatever the date policy.
        report.merge(
            deidentify_dataset(
                dataset,
                names,
                pseudonymizer,
                replace_uids=False,
                known_values=options.known_values,
                dates_from_source=False,
            )
        )
        return dataset

    metadata = WsiDicomizerMetadata(
        patient=Patient(
            identifier=names.patient,
            name=names.patient,
            de_identification=PatientDeIdentification(identity_removed=True),
        ),
        study=Study(identifier=names.case[:16]),
        slide=Slide(identifier=names.slide),
    )
    errors = []
    for source in SOURCES:
        left_out: list[float] = []
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # WsiDicomizer.convert in two steps, to size the batches from the source.
                uids = CallableUidGenerator()
                with WsiDicomizer.open(
                    path,
                    metadata=metadata,
                    include_confidential=False,
                    metadata_post_processor=post_process,
                    encoding=JpegSettings(quality=options.jpeg_quality),
                    preferred_source=(
                        _dyadic_levels_only(source, left_out)
                        if source in PIXEL_SOURCES
                        else SourceIdentifier(source)
                    ),
                    uid_generator=uids,
                ) as wsi:
                    through = _passes_through(wsi)
                    if through and source == "opentile":
                        read_tiles_directly(wsi, path)
                    written = _save(
                        wsi,
                        target,
                        uids,
                        workers=PASSTHROUGH_WORKERS if through else options.workers,
                        chunk_size=_chunk_size(wsi) if through else None,
                        keep_overview=options.keep_overview,
                    )
                for name in written:
                    _replace_content_datetime(Path(name), report)
        except Exception as exc:  # each source refuses in its own way; the next may read it
            errors.append(f"{source}: {exc}")
            _empty(target)
            continue
        method = f"wsidicomizer ({source})"
        if left_out:
            method += (
                "; levels not at a power-of-two scale of the base left out (downsample "
                + ", ".join(f"{downsample:.3f}" for downsample in left_out)
                + ")"
            )
        return Conversion(
            files=sorted(Path(name) for name in written),
            excluded=["label"] + ([] if options.keep_overview else ["overview"]),
            profile=report,
            method=method,
        )
    raise UnsupportedFormat(f"{path}: cannot convert to DICOM WSI ({'; '.join(errors)})")


def _dyadic_levels_only(source: str, left_out: list[float]) -> Any:
    """wsidicomizer's pixel-reading source ``source`` (a key of ``PIXEL_SOURCES``), without
    the pyramid levels that are not a power-of-two scale of the base; their downsamples are
    appended to ``left_out``.

    wsidicom builds a pyramid only of levels whose scale is a power of two (within its
    ``level_scale_tolerance``) and refuses the whole slide otherwise. A generic TIFF whose
    small levels were rounded to whole pixels (a 300 px base over a 37 px level is 8.09x)
    would then not be stored at all. Leaving such a level out keeps every other level;
    ``slidebank pyramid`` can add the missing ones from the base. wsidicomizer has no
    argument for it, so the source's level table (``pyramid_levels``) is filtered in a
    subclass, which ``WsiDicomizer.open`` accepts in place of a source name."""
    import importlib

    from wsidicom.config import settings

    module, name = PIXEL_SOURCES[source]
    with _pydicom_validation_kept():
        base = getattr(importlib.import_module(module), name)
    tolerance = settings.level_scale_tolerance

    class DyadicLevels(base):  # type: ignore[misc, valid-type]
        @property
        def pyramid_levels(self) -> dict[tuple[int, float, str], int]:
            kept = {}
            for key, index in super().pyramid_levels.items():
                # Set by wsidicomizer's OpenSlide-like sources before any level is built.
                downsample = float(self._level_downsamples[index])
                scale = math.log2(downsample)
                if math.isclose(scale, round(scale), abs_tol=tolerance):
                    kept[key] = index
                elif downsample not in left_out:
                    left_out.append(downsample)
            return kept

    DyadicLevels.__name__ = f"Dyadic{name}"
    return DyadicLevels


def _save(
    wsi: Any,
    target: Path,
    uids: Any,
    *,
    workers: int,
    chunk_size: int | None,
    keep_overview: bool,
) -> list[Any]:
    """What ``WsiDicom.save`` writes for us (every pyramid with its thumbnails, the overview
    when kept, never the label), through wsidicom's writers directly: ``save`` leaves each
    level's queue of batches at 100, which its arguments cannot change."""
    from wsidicom.file.file_writer import GroupFileWriter
    from wsidicom.file.io import OffsetTableType

    from slidebank.deid.frame_writer import BatchPyramidFileWriter

    offsets = OffsetTableType.from_string(OFFSET_TABLE)
    written: list[Any] = []

    def write_group(group: Any) -> None:
        written.extend(
            GroupFileWriter(
                group=group,
                output_path=target,
                uid_generator=uids,
                transcoder=None,
                force_transcoding=False,
                offset_table=offsets,
                instance_number_start=len(written),
            ).write()
        )

    for pyramid in wsi.pyramids:
        written += BatchPyramidFileWriter(
            pyramid=pyramid,
            output_path=target,
            uid_generator=uids,
            max_threads=workers,
            offset_table=offsets,
            add_missing_levels=False,  # as save does; `slidebank pyramid` adds them later
            instance_number_start=len(written),
            chunk_size=chunk_size,
            queue_maxsize=QUEUED_BATCHES,
        ).write()
        for group in pyramid.thumbnails.groups if pyramid.thumbnails is not None else []:
            write_group(group)
    if keep_overview and wsi.overviews is not None:
        for group in wsi.overviews:
            write_group(group)
    return written


def _replace_content_datetime(path: Path, report: ProfileReport) -> None:
    """Put the dummy ContentDate and ContentTime into a file wsidicom has written.

    wsidicom sets both to the moment it writes each file (``WsiDicomWriter.write_header``
    passes ``datetime.now()`` to ``WsiDicomIO.write_dataset``), after our post-processor
    has run, and ``wsidicom.metadata`` has no content date-time to give it instead. That
    moment is the ingest's, close to the scan's when slides are ingested as they are
    scanned, so it follows the date policy: both are type 1 in the VL WSI IOD (Multi-frame
    Functional Groups Module), so they get the profile's fixed dummy (PS3.15 action D) under
    either policy (shifting it would publish the shift: the ingest time is in the
    catalogue). The values are overwritten where they lie, with dummies as long as what
    wsidicom writes (8 and 14 bytes), so nothing else in the file moves: the pixel data and
    its offset tables stay as written. A value too short for the dummy fails this source's
    conversion, naming the file and the attribute."""
    replacements = {
        Tag("ContentDate"): str(DUMMIES["DA"]),
        # The same form as wsidicom's (HHMMSS.FFFFFF): the whole time of day is zeros.
        Tag("ContentTime"): DUMMY_TIME_FRACTION,
    }
    with path.open("r+b") as file:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = pydicom.dcmread(
                file, stop_before_pixels=True, specific_tags=list(replacements)
            )
        for tag, value in replacements.items():
            if tag not in dataset:
                continue  # nothing of the moment was written
            raw = dataset.get_item(tag)
            encoded = value.encode("ascii")
            if not isinstance(raw, RawDataElement) or len(encoded) > raw.length:
                raise UnsupportedFormat(
                    f"{path.name}: cannot replace {dataset[tag].keyword} in place (the value "
                    f"written is not a plain element of at least {len(encoded)} bytes)"
                )
            # Trailing spaces pad DA and TM values to their length (PS3.5 6.2).
            file.seek(raw.value_tell)
            file.write(encoded.ljust(raw.length, b" "))
            report.replaced.add(dataset[tag].keyword)


def replace_in_headers(paths: list[Path], replacements: dict[str, str]) -> None:
    """Write each replacement over its stand-in wherever the stand-in is in the header of a
    converted file (everything before the pixel data), in place, then fsync the file.

    For names that are not known when the conversion starts (``ingest.deidentify`` writes
    stand-ins for pseudonyms derived from the source's checksum while that is computed).
    Stand-in and replacement are ASCII of one length, so nothing else in the file moves; a
    stand-in is chosen so that no header holds it otherwise."""
    pairs = [(old.encode("ascii"), new.encode("ascii")) for old, new in replacements.items()]
    if any(len(old) != len(new) for old, new in pairs):
        raise ValueError("a stand-in and its replacement must have one length")
    for path in paths:
        with path.open("r+b") as file:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pydicom.dcmread(file, stop_before_pixels=True)
            header_end = file.tell()  # at the Pixel Data element
            file.seek(0)
            header = file.read(header_end)
            for old, new in pairs:
                at = header.find(old)
                while at != -1:
                    file.seek(at)
                    file.write(new)
                    at = header.find(old, at + len(old))
        _fsync(path)


def _passes_through(wsi: Any) -> bool:
    """Whether every pyramid level's stored tiles go into the DICOM files as they are."""
    return all(
        image_data.transcoder is None
        for level in wsi.levels
        for image_data in level.image_data_map.values()
    )


def _chunk_size(wsi: Any) -> int:
    """Tiles per batch: at least ``PASSTHROUGH_CHUNK_TILES``, and at least what any level's
    source asks for (an NDPI level stored as one frame asks for a whole row of tiles)."""
    asked = [
        image_data.suggested_minimum_chunk_size
        for level in wsi.levels
        for image_data in level.image_data_map.values()
    ]
    return int(max([PASSTHROUGH_CHUNK_TILES, *asked]))


def _fresh_file_meta(dataset: Dataset) -> FileMetaDataset:
    """Only what the file needs: the source's file meta names the software and station
    that wrote it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = dataset.file_meta.TransferSyntaxUID
    return meta


def preload_converter() -> threading.Thread:
    """Import wsidicomizer (about a second) on a thread of its own while the source is being
    hashed, so that a one-slide ingest (or a STOW) does not wait for it afterwards. Only for
    sources that are not DICOM: the import briefly makes pydicom strict for the process.
    The caller joins the thread before anything else may import wsidicom."""

    def load() -> None:
        with _pydicom_validation_kept():
            import wsidicomizer  # noqa: F401

    thread = threading.Thread(target=load, name="slidebank-import-wsidicomizer", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def _pydicom_validation_kept() -> Iterator[None]:
    """wsidicomizer sets pydicom's process-wide ``enforce_valid_values`` when imported, which
    would make every later read of an off-standard file raise; put the modes back."""
    settings = pydicom.config.settings
    reading, writing = settings.reading_validation_mode, settings.writing_validation_mode
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = reading, writing


def _empty(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@contextlib.contextmanager
def _writing_back(folder: Path) -> Iterator[None]:
    """Write the files growing in ``folder`` back to disk while they are written.

    Otherwise the kernel holds the whole converted slide as dirty pages (gigabytes, below
    its background threshold) and the fsync at the end writes it all while nothing else
    runs: 0.6-0.7 s of a 2 GB conversion. A thread flushing every half second overlaps
    that with the conversion, which is held by Python and leaves the disk idle.
    """
    stop = threading.Event()

    def flush() -> None:
        while not stop.wait(WRITE_BACK_SECONDS):
            for path in folder.glob("*.dcm"):
                with contextlib.suppress(OSError):  # a file may come and go meanwhile
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fdatasync(fd)
                    finally:
                        os.close(fd)

    flusher = threading.Thread(target=flush, name="slidebank-write-back", daemon=True)
    flusher.start()
    try:
        yield
    finally:
        stop.set()
        flusher.join()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
