"""tifffile backend: OME-TIFF and tiled TIFFs that OpenSlide does not read."""

from __future__ import annotations

import os
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from defusedxml import ElementTree
from PIL import Image

from slidebank.errors import CorruptSlide, InvalidInput, NotFound, UnsupportedFormat
from slidebank.geometry import Mpp, Point, Size
from slidebank.slides.model import AssociatedImageInfo, Level, RawTile, SlideInfo
from slidebank.slides.reader import SlideReader
from slidebank.slides.sniff import is_tiff, kind_of, read_header
from slidebank.slides.tiff_tiles import TiffLevelTiles, level_tiles, read_stored_tile

# An untiled page is decoded whole; above this many pixels that costs too much memory.
MAX_UNTILED_PIXELS = 64 * 1024 * 1024
OME_UNITS_TO_MICRONS = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
RESOLUTION_UNIT_MICRONS = {2: 25400.0, 3: 10000.0}  # inch, centimetre


class TiffFileReader(SlideReader):
    """Pyramidal (or at least tiled) TIFF read tile by tile with tifffile."""

    name = "tifffile"

    def __init__(self, files: tuple[Path, ...]) -> None:
        super().__init__(files)
        self.path = files[0]
        try:
            self._tiff = tifffile.TiffFile(self.path)
        except (tifffile.TiffFileError, ValueError, IndexError, KeyError, OSError) as exc:
            raise CorruptSlide(f"{self.path}: TIFF structure is unreadable: {exc}") from exc
        self._fd: int | None = None
        self._tile_index: dict[int, TiffLevelTiles | None] = {}
        # tifffile reads whole pages through one seek-and-read file handle; tiles are read
        # with pread and need no lock.
        self._page_lock = threading.Lock()
        try:
            self._pages = self._pyramid()
            self._fd = os.open(self.path, os.O_RDONLY)
        except BaseException:
            self._tiff.close()
            raise

    def _pyramid(self) -> list[tifffile.TiffPage]:
        """The first page of every level, after refusing what is not a tiled image."""
        if len(self._tiff.pages) == 0:
            raise CorruptSlide(
                f"{self.path}: no readable TIFF directory; the file is truncated or damaged"
            )
        try:
            series = self._tiff.series[0]
            pages = [_first_page(level) for level in series.levels]
        except (tifffile.TiffFileError, ValueError, IndexError, KeyError, OSError) as exc:
            raise CorruptSlide(f"{self.path}: TIFF structure is unreadable: {exc}") from exc
        base = pages[0]
        if not base.is_tiled and len(pages) == 1:
            raise UnsupportedFormat(
                f"{self.path}: a plain TIFF ({base.imagewidth}x{base.imagelength} px, untiled, "
                "one resolution) is not a whole-slide image; convert it to a tiled pyramid "
                "(for example `vips tiffsave IN OUT --tile --pyramid --compression jpeg`)"
            )
        if base.samplesperpixel not in (1, 3, 4):
            raise UnsupportedFormat(
                f"{self.path}: {base.samplesperpixel} samples per pixel is not supported"
            )
        return pages

    @classmethod
    def probe(cls, files: tuple[Path, ...]) -> bool:
        return len(files) == 1 and is_tiff(kind_of(read_header(files[0])))

    @cached_property
    def info(self) -> SlideInfo:
        base = self._pages[0]
        levels = tuple(
            Level(
                Size(page.imagewidth, page.imagelength),
                base.imagewidth / page.imagewidth,
                Size(page.tilewidth, page.tilelength) if page.is_tiled else None,
            )
            for page in self._pages
        )
        is_ome = bool(self._tiff.is_ome)
        properties = {
            "tiff.compression": tifffile.COMPRESSION(base.compression).name,
            "tiff.photometric": tifffile.PHOTOMETRIC(base.photometric).name,
            "tiff.samples-per-pixel": str(base.samplesperpixel),
            "tiff.bits-per-sample": str(base.bitspersample),
        }
        if base.software:
            properties["tiff.software"] = str(base.software)
        return SlideInfo(
            format="ome-tiff" if is_ome else "tiled-tiff",
            vendor="ome" if is_ome else None,
            levels=levels,
            mpp=self._ome_mpp() if is_ome else _resolution_mpp(base),
            objective_power=self._ome_objective() if is_ome else None,
            associated=self._associated(),
            properties=properties,
            backend=self.name,
        )

    def _ome_root(self) -> Any:
        xml = self._tiff.ome_metadata
        if not xml:
            return None
        try:
            return ElementTree.fromstring(xml.encode("utf-8"))
        except (ElementTree.ParseError, ValueError) as exc:
            raise CorruptSlide(f"{self.path}: OME-XML metadata is malformed: {exc}") from exc

    def _ome_mpp(self) -> Mpp | None:
        root = self._ome_root()
        if root is None:
            return None
        for element in root.iter():
            if element.tag.endswith("}Pixels") and element.get("PhysicalSizeX"):
                x = _microns(element.get("PhysicalSizeX"), element.get("PhysicalSizeXUnit"))
                y = _microns(
                    element.get("PhysicalSizeY", element.get("PhysicalSizeX")),
                    element.get("PhysicalSizeYUnit", element.get("PhysicalSizeXUnit")),
                )
                return Mpp(x, y) if x and y else None
        return None

    def _ome_objective(self) -> float | None:
        root = self._ome_root()
        if root is None:
            return None
        for element in root.iter():
            if element.tag.endswith("}Objective") and element.get("NominalMagnification"):
                return _positive(element.get("NominalMagnification"))
        return None

    def _associated(self) -> tuple[AssociatedImageInfo, ...]:
        found = []
        for series in self._tiff.series[1:]:
            name = (series.name or "").lower()
            if name in ("label", "macro", "thumbnail"):
                page = _first_page(series)
                found.append(AssociatedImageInfo(name, Size(page.imagewidth, page.imagelength)))
        return tuple(found)

    def read_region(self, location: Point, level: int, size: Size) -> Image.Image:
        self._check_region(location, level, size)
        page = self._pages[level]
        lvl = self.info.levels[level]
        x0 = round(location.x / lvl.downsample)
        y0 = round(location.y / lvl.downsample)
        out = np.full((size.height, size.width, 3), 255, dtype=np.uint8)
        x1 = min(x0 + size.width, lvl.size.width)
        y1 = min(y0 + size.height, lvl.size.height)
        if x1 <= max(x0, 0) or y1 <= max(y0, 0):
            return Image.fromarray(out)
        if not page.is_tiled:
            pixels = self._untiled(page)[max(y0, 0) : y1, max(x0, 0) : x1]
            out[max(y0, 0) - y0 : y1 - y0, max(x0, 0) - x0 : x1 - x0] = pixels
            return Image.fromarray(out)
        tw, th = page.tilewidth, page.tilelength
        columns = -(-page.imagewidth // tw)
        for row in range(max(y0, 0) // th, (y1 - 1) // th + 1):
            for column in range(max(x0, 0) // tw, (x1 - 1) // tw + 1):
                tile = self._decode_tile(page, row * columns + column, column, row)
                tx, ty = column * tw, row * th
                sx0, sy0 = max(x0, tx), max(y0, ty)
                sx1, sy1 = min(x1, tx + tw), min(y1, ty + th)
                out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = tile[
                    sy0 - ty : sy1 - ty, sx0 - tx : sx1 - tx
                ]
        return Image.fromarray(out)

    def _decode_tile(self, page: tifffile.TiffPage, index: int, column: int, row: int) -> Any:
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        if self._fd is None:
            raise CorruptSlide(f"{self.path}: slide is closed")
        data = os.pread(self._fd, count, offset) if count else None
        if count and (data is None or len(data) != count):
            raise CorruptSlide(f"{self.path}: tile ({column}, {row}) is cut short")
        try:
            segment, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as exc:
            raise CorruptSlide(
                f"{self.path}: tile ({column}, {row}) does not decode: {exc}"
            ) from exc
        if segment is None:  # empty (sparse) tile
            return np.full((page.tilelength, page.tilewidth, 3), 255, dtype=np.uint8)
        return _to_rgb8(np.asarray(segment)[0], page.bitspersample)

    def _untiled(self, page: tifffile.TiffPage) -> Any:
        if page.imagewidth * page.imagelength > MAX_UNTILED_PIXELS:
            raise InvalidInput(f"{self.path}: untiled level of {page.shape} is too large to read")
        try:
            with self._page_lock:
                pixels = page.asarray()
            return _to_rgb8(pixels, page.bitspersample)
        except Exception as exc:
            raise CorruptSlide(f"{self.path}: level does not decode: {exc}") from exc

    def associated_image(self, name: str) -> Image.Image:
        for series in self._tiff.series[1:]:
            if (series.name or "").lower() == name:
                return Image.fromarray(self._untiled(_first_page(series)))
        raise NotFound(f"{self.path}: no associated image {name!r}")

    def read_raw_tile(self, level: int, column: int, row: int) -> RawTile | None:
        self._check_tile(level, column, row)
        tiles = self._tiles(level)
        if tiles is None or self._fd is None:
            return None
        return read_stored_tile(self.path, self._fd, tiles, column, row)

    def stored_tiles(self, level: int) -> TiffLevelTiles | None:
        return self._tiles(level)

    def _tiles(self, level: int) -> TiffLevelTiles | None:
        if level not in self._tile_index:
            page = self._pages[level]
            self._tile_index[level] = level_tiles(page) if page.is_tiled else None
        return self._tile_index[level]

    def close(self) -> None:
        self._tiff.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _positive(text: str | None) -> float | None:
    """A positive finite number from untrusted metadata text, or None."""
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if 0 < value < float("inf") else None


def _microns(value: str | None, unit: str | None) -> float | None:
    """A physical size in µm; None where the value or its unit is not understood."""
    factor = OME_UNITS_TO_MICRONS.get(unit or "µm")
    number = _positive(value)
    return number * factor if number is not None and factor is not None else None


def _first_page(series: Any) -> tifffile.TiffPage:
    page = series.keyframe if hasattr(series, "keyframe") else series.pages[0]
    if not isinstance(page, tifffile.TiffPage):
        page = page.aspage()
    if not isinstance(page, tifffile.TiffPage):
        raise CorruptSlide("TIFF series has no readable first page")
    return page


def _to_rgb8(array: Any, bits: int) -> Any:
    """Any of gray, gray+alpha, RGB, RGBA at 8 or 16 bits as an 8-bit RGB array."""
    data = np.asarray(array)
    if data.dtype != np.uint8:
        shift = max(int(bits) - 8, 0)
        data = (data.astype(np.uint32) >> shift).clip(0, 255).astype(np.uint8)
    if data.ndim == 2:
        data = data[:, :, None]
    if data.shape[2] == 1:
        data = np.repeat(data, 3, axis=2)
    return data[:, :, :3]


def _resolution_mpp(page: tifffile.TiffPage) -> Mpp | None:
    unit = RESOLUTION_UNIT_MICRONS.get(int(page.resolutionunit))
    tags = page.tags
    if unit is None or "XResolution" not in tags or "YResolution" not in tags:
        return None
    x_num, x_den = tags["XResolution"].value
    y_num, y_den = tags["YResolution"].value
    if not (x_num and y_num):
        return None
    return Mpp(unit * x_den / x_num, unit * y_den / y_num)
