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
        fd_path = reader.files[0]
        with fd_path.open("rb") as handle:
            for row in range(rows):
                line = []
                for column in range(columns):
                    index = row * stored.columns + column
                    handle.seek(stored.offsets[index])
                    line.append(handle.read(stored.byte_counts[index]))
                tiles.append(tuple(line))
        return Tissue(pixels, size, tuple(tiles), stored.tables)


def tissue_from_image(image: Image.Image | Any, tile_size: int) -> Tissue:
    """Tissue from an image (e.g. scikit-image's IHC sample), mirrored to tile seamlessly."""
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if pixels.ndim != 3 or pixels.shape[2] < 3:
        raise InvalidInput("tissue image must be RGB")
    pixels = pixels[:, :, :3]
    # Mirroring makes the pattern continuous across its period, so no seams show.
    pixels = np.concatenate([pixels, pixels[:, ::-1]], axis=1)
    pixels = np.concatenate([pixels, pixels[::-1]], axis=0)
    return Tissue(np.ascontiguousarray(pixels), tile_size)


def demo_tissue(tile_size: int) -> Tissue:
    """The real IHC image bundled with scikit-image (no network needed)."""
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - the demo extra installs it
        raise InvalidInput(
            "the demo slide needs scikit-image (pip install 'slidebank[demo]')"
        ) from exc
    image: Any = data.immunohistochemistry()  # type: ignore[no-untyped-call]
    return tissue_from_image(np.asarray(image), tile_size)
