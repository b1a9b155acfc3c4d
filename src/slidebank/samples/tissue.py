"""Where sample tissue comes from: a real slide (its stored JPEG tiles) or a real image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from slidebank.errors import InvalidInput
from slidebank.geometry import Point, Size
from slidebank.slides import open_slide

MAX_PATTERN_SIDE = 4096


@dataclass(frozen=True)
class Tissue:
    """A periodic tissue pattern: pixels, and optionally the stored JPEG tiles they came from.

    ``pixels`` is an RGB array whose height and width are multiples of ``tile_size`` when
    ``raw_tiles`` is given; ``raw_tiles[row][column]`` is a standalone JPEG of that tile.
    """

    pixels: Any
    tile_size: int
    raw_tiles: tuple[tuple[bytes, ...], ...] | None = None
    raw_tables: bytes | None = None


def tissue_from_slide(path: Path, tile_size: int | None = None) -> Tissue:
    """Tissue from a real slide: its level-0 stored tiles (passed through) and pixels."""
    with open_slide(path) as reader:
        level = reader.info.levels[0]
        stored = reader.stored_tiles(0)
        grid = level.grid
        if level.tile_size is None or grid is None or stored is None:
            raise InvalidInput(f"{path}: tissue source must be a tiled TIFF-based slide")
        if stored.compression != 7:
            raise InvalidInput(f"{path}: tissue source tiles must be JPEG")
        size = level.tile_size.width
        if tile_size not in (None, size) or level.tile_size.height != size:
            raise InvalidInput(f"{path}: tiles are {level.tile_size}, not square {tile_size}")
        columns = min(level.size.width // size, MAX_PATTERN_SIDE // size)
        rows = min(level.size.height // size, MAX_PATTERN_SIDE // size)
        if columns < 1 or rows < 1:
            raise InvalidInput(f"{path}: smaller than one tile")
        pixels = np.asarray(reader.read_region(Point(0, 0), 0, Size(columns * size, rows * size)))
        tiles = []
        with reader.files[0].open("rb") as handle:
            for row in range(rows):
                line = []
                for column in range(columns):
                    index = row * stored.columns + column
                    handle.seek(stored.offsets[index])
                    line.append(handle.read(stored.byte_counts[index]))
                tiles.append(tuple(line))
        return Tissue(pixels, size, tuple(tiles), stored.tables)


def as_tissue_core(tissue: Tissue, background: tuple[int, int, int] = (242, 242, 240)) -> Tissue:
    """The pattern cut to one round core on bare glass, so the slide looks like a tissue
    microarray: cores in a grid, with the white background real slides have."""
    pixels = np.asarray(tissue.pixels)
    height, width = pixels.shape[:2]
    y, x = np.mgrid[0:height, 0:width]
    dy = (y - height / 2) / (height / 2)
    dx = (x - width / 2) / (width / 2)
    angle = np.arctan2(dy, dx)
    # A slightly irregular edge, as a punched core has.
    radius = 0.82 + 0.04 * np.sin(5 * angle) + 0.02 * np.cos(11 * angle + 1.0)
    inside = np.hypot(dx, dy) < radius
    core = np.where(inside[:, :, None], pixels, np.array(background, dtype=np.uint8))
    return Tissue(np.ascontiguousarray(core.astype(np.uint8)), tissue.tile_size)


def demo_tissue(tile_size: int) -> Tissue:
    """Cores of the real IHC image bundled with scikit-image (no network needed)."""
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - the demo extra installs it
        raise InvalidInput(
            "the demo slide needs scikit-image (pip install 'slidebank[demo]')"
        ) from exc
    image: Any = data.immunohistochemistry()  # type: ignore[no-untyped-call]
    # One unmirrored image per core, enlarged so a core spans about half a millimetre.
    enlarged = Image.fromarray(np.asarray(image)).resize((1024, 1024), Image.Resampling.LANCZOS)
    pattern = np.asarray(enlarged.convert("RGB"))
    return as_tissue_core(Tissue(pattern, tile_size))
