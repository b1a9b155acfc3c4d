"""Validation step: the slide opens, its size is sane, and its tiles are really there."""

from __future__ import annotations

import os
from pathlib import Path

import simplejpeg

from slidebank.config import ValidationMode
from slidebank.errors import CorruptSlide, InvalidInput, SlidebankError, without_location
from slidebank.slides.jpeg import EOI, SOI
from slidebank.slides.reader import MAX_REGION_PIXELS, SlideReader
from slidebank.slides.sniff import is_tiff, kind_of, read_header
from slidebank.slides.tiff_tiles import JPEG, TiffLevelTiles, broken_directory_chain

# Larger than any scanner makes (the biggest WSIs are about 250,000 px on a side); a header
# declaring more is broken or hostile, and would make later steps allocate absurd buffers.
MAX_SIDE = 1_000_000
MAX_LEVELS = 64
# By area, not side: NDPI "tiles" are whole-width strips a few pixels high.
MAX_TILE_PIXELS = 8192 * 8192
# An overview is made from the smallest level, read whole: it must fit one region read.
MAX_OVERVIEW_PIXELS = MAX_REGION_PIXELS
# In quick mode, levels with at most this many tiles are decoded whole.
SMALL_LEVEL_TILES = 1024


def check_dimensions(reader: SlideReader, display: str) -> None:
    """Refuse slides whose declared size no scanner makes."""
    info = reader.info
    if not info.levels:
        raise InvalidInput(f"{display}: slide has no image levels")
    if len(info.levels) > MAX_LEVELS:
        raise InvalidInput(f"{display}: declares {len(info.levels)} levels (at most {MAX_LEVELS})")
    for index, level in enumerate(info.levels):
        width, height = level.size
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            raise InvalidInput(
                f"{display}: level {index} declares {width}x{height} px; Slidebank accepts "
                f"1 to {MAX_SIDE:,} px per side"
            )
        tile = level.tile_size
        if tile is not None and not (
            tile.width > 0 and tile.height > 0 and tile.area <= MAX_TILE_PIXELS
        ):
            raise InvalidInput(
                f"{display}: level {index} declares {tile.width}x{tile.height} px tiles; "
                f"Slidebank accepts tiles of at most {MAX_TILE_PIXELS:,} px"
            )
    smallest = min(info.levels, key=lambda level: level.size.area).size
    if smallest.area > MAX_OVERVIEW_PIXELS:
        raise InvalidInput(
            f"{display}: its smallest level is {smallest.width}x{smallest.height} px; an "
            "overview needs a pyramid level of at most "
            f"{MAX_OVERVIEW_PIXELS:,} px (add pyramid levels when converting the slide)"
        )


def validate(reader: SlideReader, display: str, mode: ValidationMode) -> None:
    """Read enough of every level to know the slide is whole (``full``: every tile).

    Run :func:`check_dimensions` first: it refuses sizes that would make reading absurd.
    """
    for path in reader.files:
        if is_tiff(kind_of(read_header(path))):
            problem = broken_directory_chain(path)
            if problem:
                raise CorruptSlide(f"{path}: {problem}")
    for index, level in enumerate(reader.info.levels):
        stored = reader.stored_tiles(index)
        if stored is not None:
            _check_stored_tiles(reader.files[0], index, stored)
        grid = level.grid
        if grid is None:
            _read_untiled_level(reader, index, display)
            continue
        count = grid.width * grid.height
        if mode == "full" or count <= SMALL_LEVEL_TILES:
            positions = [(c, r) for r in range(grid.height) for c in range(grid.width)]
        else:
            positions = [(0, 0), (grid.width - 1, grid.height - 1)]
        ends = {positions[0], positions[-1]}
        for column, row in positions:
            try:
                if (column, row) in ends:
                    # The reader's own decoding path, on the first and last tile.
                    reader.read_tile(index, column, row)
                else:
                    _decode_stored(reader, index, column, row)
            except SlidebankError as exc:
                raise CorruptSlide(
                    f"{display}: level {index}: {without_location(str(exc), reader.files)}"
                ) from exc
    for name in reader.info.associated_names:
        try:
            reader.associated_image(name)
        except SlidebankError as exc:
            raise CorruptSlide(
                f"{display}: {name} image: {without_location(str(exc), reader.files)}"
            ) from exc


def _decode_stored(reader: SlideReader, level: int, column: int, row: int) -> None:
    """Decode one tile, from its stored JPEG bytes where there are some (ten times faster than
    a decoded read through OpenSlide), else through the reader. simplejpeg is strict: it
    fails on corrupt entropy data, where libjpeg only warns and fills in garbage."""
    raw = reader.read_raw_tile(level, column, row)
    if raw is None or raw.media_type != "image/jpeg":
        reader.read_tile(level, column, row)
        return
    try:
        simplejpeg.decode_jpeg(raw.data)
    except ValueError as exc:
        raise CorruptSlide(f"tile ({column}, {row}) does not decode: {exc}") from exc


def _read_untiled_level(reader: SlideReader, index: int, display: str) -> None:
    from slidebank.geometry import Point, Size

    level = reader.info.levels[index]
    # One strip-sized region at each end of the level.
    height = min(level.size.height, 256)
    width = min(level.size.width, 4096)
    last_y = round((level.size.height - height) * level.downsample)
    last_x = round((level.size.width - width) * level.downsample)
    for location in (Point(0, 0), Point(last_x, last_y)):
        try:
            reader.read_region(location, index, Size(width, height))
        except SlidebankError as exc:
            raise CorruptSlide(
                f"{display}: level {index}: {without_location(str(exc), reader.files)}"
            ) from exc


def _check_stored_tiles(path: Path, level: int, tiles: TiffLevelTiles) -> None:
    """Every tile lies inside the file and, for JPEG, starts and ends with its markers.

    Reads four bytes per tile with pread rather than mapping the file: a mapping would pull
    every touched page of a multi-gigabyte slide into this process's resident memory.
    """
    size = path.stat().st_size
    extents = list(zip(tiles.offsets, tiles.byte_counts, strict=True))
    for index, (offset, count) in enumerate(extents):
        if count and offset + count > size:
            column, row = index % tiles.columns, index // tiles.columns
            raise CorruptSlide(
                f"{path}: level {level} tile ({column}, {row}) lies beyond the end of the file "
                f"(bytes {offset}-{offset + count} of {size}); the file is truncated"
            )
    if tiles.compression != JPEG:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        for index, (offset, count) in enumerate(extents):
            if not count:
                continue
            head = os.pread(fd, 2, offset)
            tail = os.pread(fd, 2, offset + count - 2)
            if tail != EOI:
                # Some writers pad tiles with zero bytes after the end-of-image marker.
                tail = os.pread(fd, min(count, 4096), offset + max(count - 4096, 0))
                tail = tail.rstrip(b"\0")[-2:]
            if head != SOI or tail != EOI:
                column, row = index % tiles.columns, index // tiles.columns
                raise CorruptSlide(
                    f"{path}: level {level} tile ({column}, {row}) is not a complete JPEG stream"
                )
    finally:
        os.close(fd)
