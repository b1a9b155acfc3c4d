"""Pick a backend by content and open a slide with it."""

from __future__ import annotations

from pathlib import Path

import tifffile

from slidebank.errors import CorruptSlide, InvalidInput, UnsupportedFormat, without_location
from slidebank.slides.backends.openslide_backend import OpenSlideReader
from slidebank.slides.backends.tifffile_backend import TiffFileReader
from slidebank.slides.backends.wsidicom_backend import WsiDicomReader
from slidebank.slides.cache import DecodedTileCache
from slidebank.slides.reader import SlideReader
from slidebank.slides.sniff import is_tiff, kind_of, read_header

BACKENDS: dict[str, type[SlideReader]] = {
    backend.name: backend for backend in (OpenSlideReader, WsiDicomReader, TiffFileReader)
}


def candidate_backends(files: tuple[Path, ...]) -> list[type[SlideReader]]:
    """Backends worth trying for these files, best first, from their content alone."""
    kind = kind_of(read_header(files[0]))
    if kind == "empty":
        raise UnsupportedFormat(f"{files[0]}: file is empty")
    if kind == "dicom":
        # wsidicom reads every conformant DICOM WSI, including partial pyramids and several
        # optical paths that OpenSlide refuses; OpenSlide is the fallback.
        return [WsiDicomReader, OpenSlideReader]
    if is_tiff(kind):
        if _is_ome(files[0]):
            # OpenSlide would read an OME-TIFF as a one-level generic TIFF, missing its
            # SubIFD pyramid; tifffile understands it.
            return [TiffFileReader]
        return [OpenSlideReader, TiffFileReader]
    return [OpenSlideReader]


def open_slide(
    files: tuple[Path, ...] | Path,
    backend: str | None = None,
    *,
    cache: DecodedTileCache | None = None,
) -> SlideReader:
    """Open the files of one slide with the backend named, or the first that reads them;
    decoded tiles go to ``cache`` when given."""
    reader = _open(files, backend)
    if cache is not None:
        reader.share_cache(cache)
    return reader


def _open(files: tuple[Path, ...] | Path, backend: str | None) -> SlideReader:
    group = (files,) if isinstance(files, Path) else tuple(files)
    if not group:
        raise InvalidInput("no files given for the slide")
    if backend is not None:
        if backend not in BACKENDS:
            raise InvalidInput(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
        return BACKENDS[backend](group)
    unsupported: list[UnsupportedFormat] = []
    corrupt: list[str] = []
    for candidate in candidate_backends(group):
        if not candidate.probe(group):
            continue
        try:
            return candidate(group)
        except UnsupportedFormat as exc:
            unsupported.append(exc)
        except CorruptSlide as exc:
            corrupt.append(f"{candidate.name}: {without_location(str(exc), group)}")
    if corrupt:
        raise CorruptSlide(f"{group[0]}: not a readable whole-slide image: " + "; ".join(corrupt))
    if unsupported:
        raise unsupported[-1]
    kind = kind_of(read_header(group[0]))
    raise UnsupportedFormat(f"{group[0]}: not a whole-slide image (content is {_describe(kind)})")


def _is_ome(path: Path) -> bool:
    try:
        with tifffile.TiffFile(path) as tiff:
            return bool(tiff.is_ome)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError, KeyError):
        return False


def _describe(kind: str) -> str:
    return {"text": "text", "ini": "an index file with no slide data beside it"}.get(kind, kind)
