"""Raw tile access to tiled TIFF levels through tifffile, shared by the TIFF-based backends."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import tifffile

from slidebank.errors import CorruptSlide
from slidebank.slides.jpeg import complete_tile
from slidebank.slides.model import RawTile

JPEG = 7
PHOTOMETRIC_RGB = 2

# Only JPEG tiles are standalone images a client can use as stored; Aperio's JPEG 2000
# (33003, 33005) are bare codestreams that must be decoded anyway.
MEDIA_TYPES = {JPEG: "image/jpeg"}


@dataclass(frozen=True)
class TiffLevelTiles:
    """Where the tiles of one tiled TIFF page are, and how to complete them."""

    offsets: tuple[int, ...]
    byte_counts: tuple[int, ...]
    columns: int
    compression: int
    tables: bytes | None
    rgb_components: bool

    @property
    def media_type(self) -> str | None:
        return MEDIA_TYPES.get(self.compression)


def level_tiles(page: tifffile.TiffPage) -> TiffLevelTiles:
    """Tile locations of a tiled page (``page.is_tiled`` must hold)."""
    tables_tag = page.tags.get("JPEGTables")
    tables = bytes(tables_tag.value) if tables_tag is not None else None
    columns = -(-page.imagewidth // page.tilewidth)
    return TiffLevelTiles(
        offsets=tuple(int(o) for o in page.dataoffsets),
        byte_counts=tuple(int(c) for c in page.databytecounts),
        columns=columns,
        compression=int(page.compression),
        tables=tables,
        rgb_components=int(page.photometric) == PHOTOMETRIC_RGB,
    )


def read_stored_tile(
    path: Path, fd: int, tiles: TiffLevelTiles, column: int, row: int
) -> RawTile | None:
    """The stored bytes of tile (column, row), completed into a standalone stream; None for
    compressions with no standalone form and for tiles a sparse TIFF leaves out."""
    media_type = tiles.media_type
    index = row * tiles.columns + column
    offset, count = tiles.offsets[index], tiles.byte_counts[index]
    if media_type is None or count == 0:
        return None
    data = os.pread(fd, count, offset)
    if len(data) != count:
        raise CorruptSlide(f"{path}: tile ({column}, {row}) is cut short (file truncated?)")
    if tiles.compression == JPEG:
        try:
            data = complete_tile(data, tiles.tables, tiles.rgb_components)
        except ValueError as exc:
            raise CorruptSlide(f"{path}: tile ({column}, {row}): {exc}") from exc
    return RawTile(data=data, media_type=media_type)


MAX_DIRECTORIES = 4096


def broken_directory_chain(path: Path) -> str | None:
    """Why the file's chain of TIFF directories is broken, or None if it is whole.

    Written by hand because libtiff and tifffile both stop quietly at a directory that lies
    past the end of the file, so a truncated slide would read as a smaller, valid one.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        header = handle.read(16)
        if len(header) < 8 or header[:2] not in (b"II", b"MM"):
            return "not a TIFF header"
        order = "<" if header[:2] == b"II" else ">"
        (version,) = struct.unpack(order + "H", header[2:4])
        big = version == 43
        if big:
            (offset,) = struct.unpack(order + "Q", header[8:16])
            count_format, entry_size, next_format = "Q", 20, "Q"
        else:
            (offset,) = struct.unpack(order + "I", header[4:8])
            count_format, entry_size, next_format = "H", 12, "I"
        count_size = struct.calcsize(count_format)
        next_size = struct.calcsize(next_format)
        seen: set[int] = set()
        directory = 0
        while offset:
            if offset in seen or directory >= MAX_DIRECTORIES:
                return f"TIFF directory {directory} loops back or there are too many"
            seen.add(offset)
            if offset + count_size > size:
                return (
                    f"TIFF directory {directory} lies beyond the end of the file "
                    f"(offset {offset} of {size} bytes): the file is truncated"
                )
            handle.seek(offset)
            (entries,) = struct.unpack(order + count_format, handle.read(count_size))
            end = offset + count_size + entries * entry_size + next_size
            if end > size:
                return f"TIFF directory {directory} runs past the end of the file: truncated"
            handle.seek(end - next_size)
            (offset,) = struct.unpack(order + next_format, handle.read(next_size))
            directory += 1
    return None
