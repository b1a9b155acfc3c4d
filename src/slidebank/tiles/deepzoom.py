"""DeepZoom geometry: the halving pyramid OpenSeadragon reads, and where each tile lies.

The tile size is the slide's own stored tile size and overlap is 0, so the DeepZoom levels
whose scale matches a stored level are exactly its tiles and can be passed through.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

from slidebank.errors import NotFound
from slidebank.geometry import Point, Size
from slidebank.slides.model import SlideInfo
from slidebank.tiles.encoding import ImageFormat
from slidebank.tiles.rendering import SCALE_TOLERANCE, Region

DEFAULT_TILE = 256
MIN_TILE, MAX_TILE = 128, 1024
DZI_FORMATS: dict[ImageFormat, str] = {"jpeg": "jpeg", "png": "png", "webp": "webp"}


@dataclass(frozen=True)
class StoredLevel:
    """A DeepZoom level that is exactly a stored level: same scale, same tile grid."""

    level: int
    whole_columns: int
    whole_rows: int


@dataclass(frozen=True)
class DeepZoom:
    """The DeepZoom pyramid of an image of ``size`` level-0 pixels.

    ``stored`` maps DeepZoom levels to the stored levels they coincide with, so that finding
    a passthrough tile costs one dictionary lookup on the hot path.
    """

    size: Size
    tile_size: int = DEFAULT_TILE
    stored: dict[int, StoredLevel] = field(default_factory=dict, compare=False)

    @classmethod
    def for_slide(cls, info: SlideInfo) -> DeepZoom:
        stored = info.levels[0].tile_size
        if not (stored and stored.width == stored.height and MIN_TILE <= stored.width <= MAX_TILE):
            return cls(info.dimensions)
        zoom = cls(info.dimensions, stored.width)
        for level in range(zoom.level_count):
            scale = zoom.scale(level)
            for index, slide_level in enumerate(info.levels):
                same_scale = abs(slide_level.downsample - scale) <= SCALE_TOLERANCE * scale
                if same_scale and slide_level.tile_size == stored:
                    # Edge tiles are padded in the file: only whole tiles pass through.
                    zoom.stored[level] = StoredLevel(
                        index,
                        slide_level.size.width // stored.width,
                        slide_level.size.height // stored.height,
                    )
                    break
        return zoom

    def stored_tile(self, level: int, column: int, row: int) -> tuple[int, int, int] | None:
        """``(stored level, column, row)`` when the tile is exactly a stored tile; else None."""
        match = self.stored.get(level)
        if match is None or not (0 <= column < match.whole_columns and 0 <= row < match.whole_rows):
            return None
        return match.level, column, row

    @cached_property
    def level_sizes(self) -> tuple[Size, ...]:
        """Sizes from level 0 (1×1 px) to the full image, as the DeepZoom format defines."""
        count = math.ceil(math.log2(max(self.size))) + 1 if max(self.size) > 1 else 1
        return tuple(
            Size(
                math.ceil(self.size.width / 2 ** (count - 1 - level)),
                math.ceil(self.size.height / 2 ** (count - 1 - level)),
            )
            for level in range(count)
        )

    @property
    def level_count(self) -> int:
        return len(self.level_sizes)

    def scale(self, level: int) -> int:
        """Level-0 pixels per pixel of ``level``."""
        return int(2 ** (self.level_count - 1 - level))

    def grid(self, level: int) -> Size:
        size = self._level_size(level)
        return Size(-(-size.width // self.tile_size), -(-size.height // self.tile_size))

    def tile_region(self, level: int, column: int, row: int) -> Region:
        """The region one tile shows; unknown levels and tiles outside the grid are NotFound."""
        size = self._level_size(level)
        grid = self.grid(level)
        if not (0 <= column < grid.width and 0 <= row < grid.height):
            raise NotFound(
                f"DeepZoom level {level} has tiles 0-{grid.width - 1} × 0-{grid.height - 1}, "
                f"not ({column}, {row})"
            )
        t = self.tile_size
        out = Size(min(t, size.width - column * t), min(t, size.height - row * t))
        scale = self.scale(level)
        return Region(Point(column * t * scale, row * t * scale), out, float(scale))

    def dzi(self, fmt: ImageFormat) -> str:
        """The .dzi descriptor."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="{DZI_FORMATS[fmt]}" Overlap="0" TileSize="{self.tile_size}">'
            f'<Size Width="{self.size.width}" Height="{self.size.height}"/></Image>'
        )

    def _level_size(self, level: int) -> Size:
        if not 0 <= level < self.level_count:
            raise NotFound(f"DeepZoom levels are 0 to {self.level_count - 1}, not {level}")
        return self.level_sizes[level]
