"""OpenSlide backend: SVS, NDPI, MRXS, SCN, BIF, Philips TIFF, VMS, generic TIFF, DICOM."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any

import openslide
import tifffile
from PIL import Image

from slidebank.errors import CorruptSlide, NotFound, UnsupportedFormat
from slidebank.geometry import Mpp, Point, Size
from slidebank.slides.cache import DecodedTileCache
from slidebank.slides.model import AssociatedImageInfo, Level, RawTile, SlideInfo
from slidebank.slides.reader import SlideReader
from slidebank.slides.tiff_tiles import JPEG, TiffLevelTiles, level_tiles, read_stored_tile

# Vendors whose levels are plain tiled TIFF pages on OpenSlide's own grid, so stored tiles can
# be served as they are. Not Ventana (overlapping tiles) nor Leica (several regions).
TIFF_VENDORS = {"aperio", "generic-tiff", "philips"}


def _float(props: Any, key: str) -> float | None:
    value = props.get(key)
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


class OpenSlideReader(SlideReader):
    """Reads every format OpenSlide 4 reads; stored tiles come from tifffile where TIFF."""

    name = "openslide"

    def __init__(self, files: tuple[Path, ...]) -> None:
        super().__init__(files)
        self.path = files[0]
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise UnsupportedFormat(f"{self.path}: not a slide format OpenSlide reads") from exc
        except openslide.OpenSlideError as exc:
            raise CorruptSlide(f"{self.path}: OpenSlide cannot open it: {exc}") from exc
        self._tiff: tifffile.TiffFile | None = None
        self._fd: int | None = None
        self._tile_index: dict[int, TiffLevelTiles] = {}
        try:
            self._vendor = str(openslide.OpenSlide.detect_format(str(self.path)))
            if self._vendor in TIFF_VENDORS:
                self._index_tiff_levels()
        except BaseException:
            self.close()
            raise

    @classmethod
    def probe(cls, files: tuple[Path, ...]) -> bool:
        try:
            return openslide.OpenSlide.detect_format(str(files[0])) is not None
        except openslide.OpenSlideError:
            return False

    def _index_tiff_levels(self) -> None:
        """Match OpenSlide's levels to tiled TIFF pages with the same size and tile size."""
        try:
            self._tiff = tifffile.TiffFile(self.path)
        except (tifffile.TiffFileError, OSError, ValueError):
            return
        self._fd = os.open(self.path, os.O_RDONLY)
        pages = [page for page in self._tiff.pages if isinstance(page, tifffile.TiffPage)]
        for index, level in enumerate(self.info.levels):
            if level.tile_size is None:
                continue
            for page in pages:
                if (
                    page.is_tiled
                    and (page.imagewidth, page.imagelength) == tuple(level.size)
                    and (page.tilewidth, page.tilelength) == tuple(level.tile_size)
                    and page.compression == JPEG
                ):
                    self._tile_index[index] = level_tiles(page)
                    break

    @cached_property
    def info(self) -> SlideInfo:
        props = self._slide.properties
        levels = []
        for index, (dims, downsample) in enumerate(
            zip(self._slide.level_dimensions, self._slide.level_downsamples, strict=True)
        ):
            tw = props.get(f"openslide.level[{index}].tile-width")
            th = props.get(f"openslide.level[{index}].tile-height")
            tile = Size(int(tw), int(th)) if tw and th else None
            levels.append(Level(Size(*dims), float(downsample), tile))
        mpp_x, mpp_y = _float(props, "openslide.mpp-x"), _float(props, "openslide.mpp-y")
        mpp = Mpp(mpp_x, mpp_y) if mpp_x and mpp_y else None
        associated = tuple(
            AssociatedImageInfo(name, Size(*image.size))
            for name, image in self._associated_sizes().items()
        )
        vendor = props.get("openslide.vendor") or self._vendor
        return SlideInfo(
            format=self._vendor,
            vendor=vendor,
            levels=tuple(levels),
            mpp=mpp,
            objective_power=_float(props, "openslide.objective-power"),
            associated=associated,
            properties=dict(props),
            backend=self.name,
        )

    def _associated_sizes(self) -> dict[str, Image.Image]:
        # openslide-python loads associated images lazily; reading them here validates them too.
        try:
            return dict(self._slide.associated_images)
        except openslide.OpenSlideError as exc:
            raise CorruptSlide(f"{self.path}: an associated image is unreadable: {exc}") from exc

    def read_region(self, location: Point, level: int, size: Size) -> Image.Image:
        self._check_region(location, level, size)
        try:
            region = self._slide.read_region(
                (location.x, location.y), level, (size.width, size.height)
            )
        except openslide.OpenSlideError as exc:
            raise CorruptSlide(
                f"{self.path}: cannot read {size.width}x{size.height} at {tuple(location)}, "
                f"level {level}: {exc}"
            ) from exc
        return _flatten(region)

    def associated_image(self, name: str) -> Image.Image:
        images = self._slide.associated_images
        if name not in images:
            raise NotFound(f"{self.path}: no associated image {name!r}")
        return _flatten(images[name])

    def read_raw_tile(self, level: int, column: int, row: int) -> RawTile | None:
        self._check_tile(level, column, row)
        tiles = self._tile_index.get(level)
        if tiles is None or self._fd is None:
            return None
        return read_stored_tile(self.path, self._fd, tiles, column, row)

    def share_cache(self, cache: DecodedTileCache) -> None:
        self._slide.set_cache(cache.openslide)

    def stored_tiles(self, level: int) -> TiffLevelTiles | None:
        """Tile offsets of a level, for validation; None where not a plain tiled TIFF."""
        return self._tile_index.get(level)

    def thumbnail(self, max_size: int) -> Image.Image:
        try:
            return _flatten(self._slide.get_thumbnail((max_size, max_size)))
        except openslide.OpenSlideError as exc:
            raise CorruptSlide(f"{self.path}: cannot make a thumbnail: {exc}") from exc

    def close(self) -> None:
        self._slide.close()
        if self._tiff is not None:
            self._tiff.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _flatten(image: Image.Image) -> Image.Image:
    """RGBA from OpenSlide (transparent outside scanned areas) onto white, as RGB."""
    if image.mode == "RGB":
        return image
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")
