"""The formats by name, and which one a file is in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import BinaryIO

from slidebank.annotations.formats import asap, dsa, geojson, imagescope
from slidebank.annotations.formats.base import (
    AnnotationReader,
    AnnotationWriter,
    ExportContext,
    ImportLimits,
    LabelStyle,
    Parsed,
)
from slidebank.annotations.model import Annotation
from slidebank.errors import InvalidInput

SNIFF_BYTES = 65_536


# DICOM annotations need highdicom (about 21 MB of memory once imported), which every process
# that knows the formats (each server worker) would otherwise carry: the module is imported
# on first use, and a file without DICOM's "DICM" prefix is turned down without it.
class _DicomAnnReader:
    name = "dicom-ann"

    def sniff(self, head: bytes) -> bool:
        if head[128:132] != b"DICM":
            return False
        from slidebank.annotations.formats import dicom_ann

        return dicom_ann.reader.sniff(head)

    def read(
        self,
        source: BinaryIO,
        filename: str,
        limits: ImportLimits,
        classes: dict[str, LabelStyle],
    ) -> Iterator[Parsed]:
        from slidebank.annotations.formats import dicom_ann

        return dicom_ann.reader.read(source, filename, limits, classes)


class _DicomAnnWriter:
    name = "dicom-ann"
    media_type = "application/dicom"
    suffix = ".dcm"

    def write(self, items: Iterable[Annotation], out: BinaryIO, context: ExportContext) -> None:
        from slidebank.annotations.formats import dicom_ann

        dicom_ann.writer.write(items, out, context)


# In sniffing order: the most specific first (GeoJSON would take any JSON with coordinates).
READERS: dict[str, AnnotationReader] = {
    "dicom-ann": _DicomAnnReader(),
    "asap": asap.reader,
    "imagescope": imagescope.reader,
    "dsa": dsa.reader,
    "geojson": geojson.reader,
}
# QuPath GeoJSON is GeoJSON with conventions; one reader knows both.
READER_ALIASES = {"qupath": "geojson"}
WRITERS: dict[str, AnnotationWriter] = {
    "qupath": geojson.qupath_writer,
    "geojson": geojson.writer,
    "asap": asap.writer,
    "imagescope": imagescope.writer,
    "dsa": dsa.writer,
    "dicom-ann": _DicomAnnWriter(),
}
IMPORT_FORMATS = ("auto", *READERS, *READER_ALIASES)


def reader_for(name: str, head: bytes, filename: str) -> AnnotationReader:
    """The reader called ``name``, or for ``auto`` the first whose sniff knows ``head``."""
    if name != "auto":
        found = READERS.get(READER_ALIASES.get(name, name))
        if found is None:
            raise InvalidInput(f"format {name!r} is not one of {', '.join(IMPORT_FORMATS)}")
        return found
    for reader in READERS.values():
        if reader.sniff(head):
            return reader
    raise InvalidInput(
        f"{filename}: not an annotation format Slidebank reads "
        f"({', '.join(READERS)}); name one with --format if it is"
    )


def writer_for(name: str) -> AnnotationWriter:
    found = WRITERS.get(name)
    if found is None:
        raise InvalidInput(f"format {name!r} is not one of {', '.join(WRITERS)}")
    return found
