"""Write Aperio-style pyramidal SVS files of any size from a tissue pattern.

Level 0 is the pattern repeated; when the pattern came from a real slide its stored JPEG
tiles are written as they are, so compression and file structure are those of a scanner.
Lower levels are the pattern downsampled and encoded (each distinct tile once: the pattern
is periodic, so most tiles repeat). Memory stays small whatever the output size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile
from PIL import Image, ImageDraw

from slidebank.errors import InvalidInput
from slidebank.samples.tissue import Tissue

LEVEL_STEP = 4  # Aperio pyramids shrink by 4 per level


@dataclass(frozen=True)
class SvsSpec:
    width: int
    height: int
    mpp: float = 0.499
    magnification: int = 20
    quality: int = 80
    min_level_side: int = 1024
    label_text: str = "SLIDEBANK SAMPLE"


def write_svs(
    target: Path,
    spec: SvsSpec,
    tissue: Tissue,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write the slide to ``target`` (via a temporary name) and return ``target``."""
    if spec.width < 1 or spec.height < 1:
        raise InvalidInput(f"slide size must be positive, got {spec.width}x{spec.height}")
    tile = tissue.tile_size
    sizes = _level_sizes(spec)
    estimate = spec.width * spec.height  # about 1 byte per pixel at these qualities, at most
    temporary = target.with_name(target.name + ".part")
    description0 = (
        f"Aperio Image Library v12.0.15\r\n{spec.width}x{spec.height} [0,0 {spec.width}x"
        f"{spec.height}] ({tile}x{tile}) JPEG/RGB Q={spec.quality}|AppMag = {spec.magnification}"
        f"|MPP = {spec.mpp:.4f}|Slidebank = synthetic sample"
    )
    try:
        _write(temporary, spec, tissue, sizes, description0, estimate, progress)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    temporary.rename(target)
    return target


def _write(
    temporary: Path,
    spec: SvsSpec,
    tissue: Tissue,
    sizes: list[tuple[int, int]],
    description0: str,
    estimate: int,
    progress: Callable[[int], None] | None,
) -> None:
    tile = tissue.tile_size
    with tifffile.TiffWriter(temporary, bigtiff=estimate > 3_500_000_000) as tiff:
        for index, (width, height) in enumerate(sizes):
            pattern = _downsampled(tissue.pixels, LEVEL_STEP**index)
            passthrough = index == 0 and tissue.raw_tiles is not None
            tiles = (
                _raw_tiles(tissue, width, height)
                if passthrough
                else _encoded_tiles(pattern, tile, width, height, spec.quality)
            )
            description = (
                description0
                if index == 0
                else f"Aperio Image Library v12.0.15\r\n{spec.width}x{spec.height} -> "
                f"{width}x{height} - |AppMag = {spec.magnification}"
            )
            tiff.write(
                _counted(tiles, progress),
                shape=(height, width, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                compression=7,
                photometric="rgb",
                # Aperio's JPEG tiles hold RGB components, not YCbCr; tifffile's default
                # would tag them YCbCr and readers would convert colours that are not.
                compressionargs={"outcolorspace": "RGB"},
                jpegtables=tissue.raw_tables if passthrough else None,
                description=description,
                metadata=None,
            )
            if index == 0:
                _write_thumbnail(tiff, tissue.pixels, spec)
        _write_associated(tiff, tissue.pixels, spec)


def _level_sizes(spec: SvsSpec) -> list[tuple[int, int]]:
    sizes = [(spec.width, spec.height)]
    while max(sizes[-1]) > spec.min_level_side and len(sizes) < 12:
        width, height = sizes[-1]
        sizes.append((max(width // LEVEL_STEP, 1), max(height // LEVEL_STEP, 1)))
    return sizes


def _downsampled(pixels: Any, step: int) -> Any:
    if step == 1:
        return pixels
    height, width = pixels.shape[:2]
    image = Image.fromarray(pixels).resize(
        (max(width // step, 1), max(height // step, 1)), Image.Resampling.LANCZOS
    )
    return np.asarray(image)


def _raw_tiles(tissue: Tissue, width: int, height: int) -> Iterator[bytes]:
    raw = tissue.raw_tiles
    assert raw is not None
    tile = tissue.tile_size
    rows, columns = len(raw), len(raw[0])
    for row in range(-(-height // tile)):
        for column in range(-(-width // tile)):
            yield raw[row % rows][column % columns]


def _encoded_tiles(
    pattern: Any, tile: int, width: int, height: int, quality: int
) -> Iterator[bytes]:
    period_y, period_x = pattern.shape[:2]
    cache: dict[tuple[int, int], bytes] = {}
    for row in range(-(-height // tile)):
        for column in range(-(-width // tile)):
            key = ((column * tile) % period_x, (row * tile) % period_y)
            data = cache.get(key)
            if data is None:
                # The pattern is periodic, so a tile is fixed by its offset in the period.
                ys = (np.arange(tile) + key[1]) % period_y
                xs = (np.arange(tile) + key[0]) % period_x
                block = np.ascontiguousarray(pattern[ys][:, xs])
                data = bytes(
                    imagecodecs.jpeg8_encode(
                        block, level=quality, colorspace="RGB", outcolorspace="RGB"
                    )
                )
                if len(cache) < 4096:
                    cache[key] = data
            yield data


def _counted(tiles: Iterator[bytes], progress: Callable[[int], None] | None) -> Iterator[bytes]:
    for data in tiles:
        if progress is not None:
            progress(len(data))
        yield data


def _write_thumbnail(tiff: tifffile.TiffWriter, pixels: Any, spec: SvsSpec) -> None:
    scale = 1024 / max(spec.width, spec.height)
    size = (max(int(spec.width * scale), 1), max(int(spec.height * scale), 1))
    image = _tiled_preview(pixels, spec, size)
    tiff.write(
        np.asarray(image),
        photometric="rgb",
        compression="jpeg",
        compressionargs={"level": 80},
        description=(
            f"Aperio Image Library v12.0.15\r\n{spec.width}x{spec.height} -> "
            f"{size[0]}x{size[1]} - |AppMag = {spec.magnification}"
        ),
        metadata=None,
    )


def _write_associated(tiff: tifffile.TiffWriter, pixels: Any, spec: SvsSpec) -> None:
    label = Image.new("RGB", (400, 400), (240, 240, 235))
    draw = ImageDraw.Draw(label)
    draw.rectangle((20, 20, 380, 380), outline=(30, 30, 30), width=4)
    draw.text((40, 180), spec.label_text, fill=(0, 0, 0))
    tiff.write(
        np.asarray(label),
        photometric="rgb",
        compression="lzw",
        description="Aperio Image Library v12.0.15\r\nlabel 400x400",
        subfiletype=1,
        metadata=None,
    )
    macro = Image.new("RGB", (1280, 420), (250, 250, 250))
    macro.paste(label.resize((380, 380)), (20, 20))
    preview = _tiled_preview(pixels, spec, (820, 380))
    macro.paste(preview, (430, 20))
    tiff.write(
        np.asarray(macro),
        photometric="rgb",
        compression="jpeg",
        compressionargs={"level": 85},
        description="Aperio Image Library v12.0.15\r\nmacro 1280x420",
        subfiletype=9,
        metadata=None,
    )


def _tiled_preview(pixels: Any, spec: SvsSpec, size: tuple[int, int]) -> Image.Image:
    """The whole slide shrunk to ``size`` (the pattern repeated, then resized)."""
    period_y, period_x = pixels.shape[:2]
    scale = size[0] / spec.width
    small = Image.fromarray(pixels).resize(
        (max(round(period_x * scale), 1), max(round(period_y * scale), 1)),
        Image.Resampling.LANCZOS,
    )
    canvas = Image.new("RGB", size)
    for y in range(0, size[1], small.height):
        for x in range(0, size[0], small.width):
            canvas.paste(small, (x, y))
    return canvas
