"""The one reader interface every backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from PIL import Image

from slidebank.errors import InvalidInput, NotFound, UnsupportedFormat
from slidebank.geometry import Point, Size
from slidebank.slides.cache import DecodedTileCache
from slidebank.slides.model import Level, RawTile, SlideInfo
from slidebank.slides.tiff_tiles import TiffLevelTiles

# One region is decoded into memory whole (3 bytes a pixel); this keeps it under 200 MB.
MAX_REGION_PIXELS = 64 * 1024 * 1024


class SlideReader(ABC):
    """A whole-slide image opened for reading.

    Backends share one constructor signature, ``Backend(files)``, where ``files`` are all the
    files of one slide (one file for most formats; the instances of a DICOM slide; the index
    file and its data folder for MRXS). ``probe(files)`` says, by content, whether a backend
    reads them.
    """

    name: ClassVar[str]

    def __init__(self, files: tuple[Path, ...]) -> None:
        self.files = files

    @classmethod
    @abstractmethod
    def probe(cls, files: tuple[Path, ...]) -> bool:
        """True if this backend can read these files (decided by content, never by name)."""

    @property
    @abstractmethod
    def info(self) -> SlideInfo: ...

    @abstractmethod
    def read_region(self, location: Point, level: int, size: Size) -> Image.Image:
        """RGB pixels of ``size`` at ``level``; ``location`` is in level-0 pixels."""

    @abstractmethod
    def associated_image(self, name: str) -> Image.Image:
        """The associated image ``name`` (label, macro, thumbnail) as RGB."""

    def read_raw_tile(self, level: int, column: int, row: int) -> RawTile | None:
        """The stored compressed tile, or None where the format has no such tile."""
        return None

    def stored_tiles(self, level: int) -> TiffLevelTiles | None:
        """Where a level's tiles lie in a TIFF file, for structural checks; None elsewhere."""
        return None

    def has_every_tile(self, level: int) -> bool:
        """Whether every tile of the level's grid is stored, each readable raw (a TIFF tile
        index, or a DICOM instance with one frame per tile), so mosaics of raw tiles work."""
        return self.stored_tiles(level) is not None

    def read_tile(self, level: int, column: int, row: int) -> Image.Image:
        """The decoded tile at (column, row) of ``level``, cut to the level's edge."""
        lvl = self._level(level)
        if lvl.tile_size is None:
            raise UnsupportedFormat(f"{self.files[0]}: level {level} is not tiled")
        self._check_tile(level, column, row)
        tw, th = lvl.tile_size
        x, y = column * tw, row * th
        width = min(tw, lvl.size.width - x)
        height = min(th, lvl.size.height - y)
        origin = Point(round(x * lvl.downsample), round(y * lvl.downsample))
        return self.read_region(origin, level, Size(width, height))

    def thumbnail(self, max_size: int) -> Image.Image:
        """An RGB overview no larger than ``max_size`` on its longer side."""
        info = self.info
        full = info.dimensions
        scale = max(full.width, full.height) / max_size
        level = info.best_level_for_downsample(max(scale, 1.0))
        while info.levels[level].size.area > MAX_REGION_PIXELS and level < len(info.levels) - 1:
            level += 1
        lvl = info.levels[level]
        image = self.read_region(Point(0, 0), level, lvl.size)
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
        return image

    def share_cache(self, cache: DecodedTileCache) -> None:  # noqa: B027 - optional hook
        """Keep decoded tiles in ``cache`` (shared with other slides) instead of a private one."""

    def memory_estimate(self) -> int:
        """About how many bytes this open slide holds, for caches that bound memory: the
        per-tile offset tables every backend keeps, plus a fixed part for the handle."""
        tiles = sum(level.grid.area for level in self.info.levels if level.grid is not None)
        return 256 * 1024 + 16 * tiles

    def close(self) -> None:  # noqa: B027 - optional hook, most backends hold something
        """Release file handles."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # helpers shared by backends

    def _level(self, level: int) -> Level:
        levels = self.info.levels
        if not 0 <= level < len(levels):
            raise NotFound(f"{self.files[0]}: no level {level} (levels 0 to {len(levels) - 1})")
        return levels[level]

    def _check_tile(self, level: int, column: int, row: int) -> None:
        grid = self._level(level).grid
        if grid is None:
            raise UnsupportedFormat(f"{self.files[0]}: level {level} is not tiled")
        if not (0 <= column < grid.width and 0 <= row < grid.height):
            raise NotFound(
                f"{self.files[0]}: no tile ({column}, {row}) at level {level} "
                f"(grid {grid.width}x{grid.height})"
            )

    def _check_region(self, location: Point, level: int, size: Size) -> Level:
        lvl = self._level(level)
        if size.width <= 0 or size.height <= 0:
            raise InvalidInput(f"region size must be positive, got {size.width}x{size.height}")
        if size.width * size.height > MAX_REGION_PIXELS:
            raise InvalidInput(
                f"region of {size.width}x{size.height} px is larger than the "
                f"{MAX_REGION_PIXELS:,} px read at once"
            )
        return lvl
