"""The formats by name, and which one a file is in."""

from __future__ import annotations

from slidebank.annotations.formats import asap, dicom_ann, dsa, geojson, imagescope
from slidebank.annotations.formats.base import AnnotationReader, AnnotationWriter
from slidebank.errors import InvalidInput

SNIFF_BYTES = 65_536
# In sniffing order: the most specific first (GeoJSON would take any JSON with coordinates).
READERS: dict[str, AnnotationReader] = {
    "dicom-ann": dicom_ann.reader,
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
    "dicom-ann": dicom_ann.writer,
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
