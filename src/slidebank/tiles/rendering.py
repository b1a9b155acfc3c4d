"""Pixels of any level-0 region at any scale, from stored tiles where the geometry allows.

Viewers ask for regions at power-of-two scales (DeepZoom levels, IIIF scale factors) while
scanners store levels 4× apart. A region at twice a stored level's downsample is the stored
tiles decoded by libjpeg-turbo at 1/2 scale (scaling in the DCT domain), pasted side by side:
no full-size decode, no resampling pass. That is several times cheaper than reading the region
at full size and shrinking it, which is what OpenSlide's DeepZoomGenerator does. OpenSlide
offers no such path, so it is written here. Everything else reads through the slide reader
and resamples with Pillow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import simplejpeg
from PIL import Image

from slidebank.errors import CorruptSlide, InvalidInput
from slidebank.geometry import Point, Size
from slidebank.slides.model import Level, RawTile
from slidebank.slides.reader import MAX_REGION_PIXELS, SlideReader

# libjpeg-turbo decodes at 1/1, 1/2, 1/4 and 1/8 scale in the DCT domain.
DCT_FACTORS = (1, 2, 4, 8)
# How far a level's downsample may be from an exact multiple of the request's scale (scanners
# round level sizes, so 4.0003 counts as 4).
SCALE_TOLERANCE = 0.01
# Pixels read from the slide in one call when a region must be shrunk band by band.
BAND_PIXELS = 16 * 1024 * 1024
WHITE = 255


@dataclass(frozen=True)
class Region:
    """A request for pixels: ``size`` output pixels, each ``scale`` level-0 pixels wide
    (``scale_y`` tall), starting at level-0 ``origin``."""

    origin: Point
    size: Size
    scale: float
    scale_y: float | None = None

    @property
    def scales(self) -> tuple[float, float]:
        return self.scale, self.scale if self.scale_y is None else self.scale_y

    @property
    def uniform(self) -> bool:
        sx, sy = self.scales
        return abs(sx - sy) <= SCALE_TOLERANCE * min(sx, sy)


@dataclass(frozen=True)
class StoredTileMatch:
    """A request that is exactly one stored tile: ``(level, column, row)``."""

    level: int
    column: int
    row: int


def match_stored_tile(reader: SlideReader, region: Region) -> StoredTileMatch | None:
    """The stored tile that is exactly this region, if there is one (no I/O)."""
    if not region.uniform:
        return None
    found = _level_at_factor(reader, region.scale)
    if found is None or found[1] != 1:
        return None
    index, _ = found
    level = reader.info.levels[index]
    if level.tile_size is None or region.size != level.tile_size:
        return None
    x, y = _level_position(region.origin, level)
    tw, th = level.tile_size
    if x % tw or y % th:
        return None
    column, row = x // tw, y // th
    # Edge tiles are padded in the file; only whole tiles inside the level pass through.
    if (column + 1) * tw > level.size.width or (row + 1) * th > level.size.height:
        return None
    return StoredTileMatch(index, column, row)


def read_stored_tile(reader: SlideReader, match: StoredTileMatch) -> RawTile | None:
    """The stored bytes of a matched tile, or None where the format keeps no JPEG tiles."""
    tile = reader.read_raw_tile(match.level, match.column, match.row)
    if tile is None or tile.media_type != "image/jpeg":
        return None
    return tile


def render(reader: SlideReader, region: Region) -> np.ndarray:
    """The region's RGB pixels, H×W×3 ``uint8``; outside the slide is white."""
    width, height = region.size
    if width < 1 or height < 1:
        raise InvalidInput(f"output size must be positive, got {width}x{height}")
    if width * height > MAX_REGION_PIXELS:
        raise InvalidInput(
            f"output of {width}x{height} px is larger than the {MAX_REGION_PIXELS:,} px "
            "rendered at once"
        )
    if region.uniform:
        mosaic = _from_stored_tiles(reader, region)
        if mosaic is not None:
            return mosaic
    return _resampled(reader, region)


def assembles_from_stored_tiles(reader: SlideReader, scale: float) -> bool:
    """Whether regions at ``scale`` are stored JPEG tiles, whole or decoded at 1/2..1/8: a
    few milliseconds of work at most, cheap enough to do without a thread hand-off."""
    found = _level_at_factor(reader, scale)
    if found is None:
        return False
    level = reader.info.levels[found[0]]
    if level.tile_size is None or level.tile_size.width % found[1]:
        return False
    # Sparse pyramids (DICOM TILED_SPARSE) leave holes that only the general path fills.
    if not reader.has_every_tile(found[0]):
        return False
    tile = reader.read_raw_tile(found[0], 0, 0)
    if tile is None or tile.media_type != "image/jpeg":
        return False
    try:
        width, height, _, _ = simplejpeg.decode_jpeg_header(tile.data)
    except ValueError:
        return False
    # Some files store frames of another size than they declare (a DICOM image smaller than
    # one tile keeps a frame of the image's size); those take the general path.
    return (width, height) == tuple(level.tile_size)


def _level_at_factor(reader: SlideReader, scale: float) -> tuple[int, int] | None:
    """A level whose downsample times a DCT factor is ``scale``: ``(level, factor)``,
    preferring the coarsest such level (fewest tiles to decode, passthrough when 1)."""
    levels = reader.info.levels
    for index in reversed(range(len(levels))):
        level = levels[index]
        ratio = scale / level.downsample
        for factor in DCT_FACTORS:
            if abs(ratio - factor) <= SCALE_TOLERANCE * factor:
                return index, factor
    return None


def _level_position(origin: Point, level: Level) -> Point:
    return Point(round(origin.x / level.downsample), round(origin.y / level.downsample))


def _from_stored_tiles(reader: SlideReader, region: Region) -> np.ndarray | None:
    """The region assembled from stored JPEG tiles decoded at 1/factor, or None."""
    found = _level_at_factor(reader, region.scale)
    if found is None:
        return None
    index, factor = found
    level = reader.info.levels[index]
    grid = level.grid
    if level.tile_size is None or grid is None:
        return None
    tw, th = level.tile_size
    if tw % factor or th % factor:
        return None
    position = _level_position(region.origin, level)
    # Work in level pixels divided by the factor: a stored tile is (tw/f × th/f) there.
    sw, sh = tw // factor, th // factor
    left, top = position.x // factor, position.y // factor
    width, height = region.size
    # The level's extent in scaled pixels; beyond it the canvas stays white.
    extent_w = -(-level.size.width // factor)
    extent_h = -(-level.size.height // factor)
    right, bottom = min(left + width, extent_w), min(top + height, extent_h)
    canvas = np.full((height, width, 3), WHITE, dtype=np.uint8)
    if right <= left or bottom <= top:
        return canvas
    for row in range(max(top // sh, 0), min((bottom - 1) // sh + 1, grid.height)):
        for column in range(max(left // sw, 0), min((right - 1) // sw + 1, grid.width)):
            tile = reader.read_raw_tile(index, column, row)
            if tile is None or tile.media_type != "image/jpeg":
                return None
            pixels = _decode_scaled(reader, tile, factor, (index, column, row))
            if pixels.shape[:2] != (sh, sw):
                return None  # an odd-sized stored tile: let the general path handle it
            x0, y0 = column * sw, row * sh
            ix0, iy0 = max(x0, left), max(y0, top)
            ix1, iy1 = min(x0 + sw, right), min(y0 + sh, bottom)
            canvas[iy0 - top : iy1 - top, ix0 - left : ix1 - left] = pixels[
                iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0
            ]
    return canvas


def _decode_scaled(
    reader: SlideReader, tile: RawTile, factor: int, where: tuple[int, int, int]
) -> np.ndarray:
    try:
        if factor == 1:
            return simplejpeg.decode_jpeg(tile.data, colorspace="RGB", strict=False)  # type: ignore[no-any-return]
        width, height, _, _ = simplejpeg.decode_jpeg_header(tile.data)
        return simplejpeg.decode_jpeg(  # type: ignore[no-any-return]
            tile.data,
            colorspace="RGB",
            min_width=width // factor,
            min_height=height // factor,
            strict=False,
        )
    except ValueError as exc:
        level, column, row = where
        raise CorruptSlide(
            f"{reader.files[0]}: stored tile ({column}, {row}) of level {level} "
            f"does not decode: {exc}"
        ) from exc


def _resampled(reader: SlideReader, region: Region) -> np.ndarray:
    """Read at the best level, band by band when large, and resample to the output size."""
    info = reader.info
    full = info.dimensions
    sx, sy = region.scales
    width, height = region.size
    canvas = np.full((height, width, 3), WHITE, dtype=np.uint8)
    # The part of the request that lies on the slide, in level-0 and in output pixels.
    x0, y0 = max(region.origin.x, 0), max(region.origin.y, 0)
    x1 = min(region.origin.x + width * sx, full.width)
    y1 = min(region.origin.y + height * sy, full.height)
    if x1 <= x0 or y1 <= y0:
        return canvas
    out_x0 = round((x0 - region.origin.x) / sx)
    out_y0 = round((y0 - region.origin.y) / sy)
    out_w = max(1, min(width - out_x0, round((x1 - x0) / sx)))
    out_h = max(1, min(height - out_y0, round((y1 - y0) / sy)))
    index = info.best_level_for_downsample(min(sx, sy))
    level = info.levels[index]
    read_w = max(1, math.ceil((x1 - x0) / level.downsample))
    read_h = max(1, math.ceil((y1 - y0) / level.downsample))
    # Rows of the level read per call, so one call stays within the band budget.
    band_rows = max(1, min(read_h, BAND_PIXELS // read_w))
    if read_w > BAND_PIXELS:
        raise InvalidInput(
            f"a region {read_w} px wide at level {index} is wider than can be read; "
            "ask for a smaller region"
        )
    done = 0
    read_y = 0
    while read_y < read_h:
        rows = min(band_rows, read_h - read_y)
        origin = Point(int(x0), int(y0 + read_y * level.downsample))
        band = reader.read_region(origin, index, Size(read_w, rows))
        # Output rows that this band covers, proportionally; the last band takes the rest.
        last = read_y + rows >= read_h
        target_h = out_h - done if last else round((read_y + rows) / read_h * out_h) - done
        if target_h > 0:
            resized = _resize(band, Size(out_w, target_h))
            canvas[out_y0 + done : out_y0 + done + target_h, out_x0 : out_x0 + out_w] = np.asarray(
                resized
            )
            done += target_h
        read_y += rows
    return canvas


def _resize(image: Image.Image, size: Size) -> Image.Image:
    if image.size == (size.width, size.height):
        return image
    if image.mode != "RGB":
        image = image.convert("RGB")
    # reducing_gap makes Pillow box-reduce by whole factors first: fast, and as sharp.
    return image.resize((size.width, size.height), Image.Resampling.LANCZOS, reducing_gap=3.0)
