"""The stored tiles of a tiled TIFF level (SVS, Philips TIFF, OME-TIFF), read for the
conversion a batch at a time.

When stored tiles are passed through, reading them is the conversion's slowest stage, and
most of it is not the reading: opentile 0.22 builds a point and recomputes the level's tile
grid for every tile, copies each tile four times to put the shared JPEG tables into it,
and checks every tile for the corrupt edges of some SVS files. For the 2 GB SVS of the
ingest benchmark that was about 2 of the conversion's 3.5 s. Here a batch of tiles that lie
back to back in the file is read with one ``pread`` and each tile is put together in one
``join``: its bytes up to the start of scan, the tables, the rest. The bytes are those
opentile gives (``NativeTiledTiffImage.get_tiles``); levels this does not cover (SVS with
corrupt edges, NDPI, other files) keep opentile's path.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from slidebank.errors import CorruptSlide

START_OF_SCAN = b"\xff\xda"
# The APP14 "Adobe" segment with transform 0 (the components are RGB, not YCbCr), which
# opentile adds after the tables of levels whose JPEG tiles are RGB (its colour-space fix).
ADOBE_RGB = b"\xff\xee\x00\x0e\x41\x64\x6f\x62\x65\x00\x64\x80\x00\x00\x00\x00"


class TiffTileRows:
    """``get_encoded_tiles`` of wsidicom's image data, for one level of one TIFF file."""

    def __init__(
        self,
        path: Path,
        offsets: Sequence[int],
        counts: Sequence[int],
        columns: int,
        inserted: bytes,
    ) -> None:
        self._path = path
        self._offsets = offsets
        self._counts = counts
        self._columns = columns
        self._inserted = inserted
        """What goes before each tile's start of scan (empty: the tiles are complete)."""

    @classmethod
    def replacing(cls, image_data: Any, path: Path) -> TiffTileRows | None:
        """For wsidicomizer's image data of a level of ``path`` whose stored tiles are
        passed through, if opentile reads it as a natively tiled TIFF level without
        corrupt edges; otherwise None."""
        from opentile.tiff_image import NativeTiledTiffImage

        image = getattr(image_data, "_tiff_image", None)
        if not isinstance(image, NativeTiledTiffImage) or image_data.needs_transcoding:
            return None
        if getattr(image, "right_edge_corrupt", False) or getattr(
            image, "bottom_edge_corrupt", False
        ):
            return None  # opentile rebuilds those tiles from the level below
        page = image._page
        if not page.is_tiled or not path.samefile(page.parent.filehandle.path):
            return None
        inserted = b""
        if page.jpegtables is not None:
            inserted = bytes(page.jpegtables[2:-2])  # without SOI and EOI
            if image._add_rgb_colorspace_fix:
                inserted += ADOBE_RGB
        columns = image.tiled_size.width
        return cls(path, page.dataoffsets, page.databytecounts, columns, inserted)

    def get_encoded_tiles(self, tiles: Iterable[Any], z: float, path: str) -> Iterator[bytes]:
        """The tiles at ``tiles`` (points with ``x`` and ``y``), in that order; ``z`` and
        ``path`` are those of the level's only focal plane and optical path."""
        indices = [tile.y * self._columns + tile.x for tile in tiles]
        return iter(self._read(indices))

    def _read(self, indices: list[int]) -> list[bytes]:
        offsets, counts = self._offsets, self._counts
        with self._path.open("rb", buffering=0) as handle:
            fd = handle.fileno()
            if all(offsets[a] + counts[a] == offsets[b] for a, b in itertools.pairwise(indices)):
                start = offsets[indices[0]]
                end = offsets[indices[-1]] + counts[indices[-1]]
                runs = [(start, end, indices)]
            else:
                runs = [(offsets[i], offsets[i] + counts[i], [i]) for i in indices]
            tiles = []
            for start, end, members in runs:
                blob = os.pread(fd, end - start, start)
                if len(blob) != end - start:
                    raise CorruptSlide(
                        f"{self._path}: tile data at bytes {start}-{end} lies beyond the end "
                        "of the file; the file is truncated"
                    )
                tiles += [self._complete(blob, offsets[i] - start, counts[i]) for i in members]
        return tiles

    def _complete(self, blob: bytes, at: int, count: int) -> bytes:
        if not self._inserted:
            return blob[at : at + count]
        scan = blob.find(START_OF_SCAN, at, at + count)
        if scan < 0:
            raise CorruptSlide(f"{self._path}: a JPEG tile at byte {at} has no start of scan")
        view = memoryview(blob)
        return b"".join((view[at:scan], self._inserted, view[scan : at + count]))


def read_tiles_directly(wsi: Any, path: Path) -> int:
    """Give every passed-through level of ``wsi`` (a ``WsiDicomizer`` of ``path``) that
    ``TiffTileRows`` covers its reader; returns how many levels it covers.

    wsidicom's writers ask each level's image data for its tiles, and wsidicomizer's
    image data for opentile sources has no way to choose another tile reader, so the
    method is replaced on the instance (the object lives only for this conversion)."""
    covered = 0
    for level in wsi.levels:
        for image_data in level.image_data_map.values():
            rows = TiffTileRows.replacing(image_data, path)
            if rows is not None:
                image_data.get_encoded_tiles = rows.get_encoded_tiles
                covered += 1
    return covered
