"""The pyramid's missing halving levels, rendered once and written as DICOM WSI instances.

Scanners store levels 4x apart; viewers (DeepZoom, IIIF) ask for every power of two. Each
tile of a level no scanner stored is otherwise rendered on every request: stored tiles
decoded at 1/2 in the DCT domain, pasted and encoded again. Here those tiles are rendered
once, by the very code that serves them (``rendering.render`` + ``encoding.encode``, so an
interior tile is byte for byte what the server would send), and kept as another instance of
the slide's DICOM series: afterwards every DeepZoom level is a stored level and its tiles
pass through.

The new instance is the level-0 instance's header (already de-identified) with the sizes,
spacing, frame count and identity of the new level, written by pydicom. Frames are spooled
to a file as they are encoded and then appended after the header, so a level of any size is
written in bounded memory.
"""

from __future__ import annotations

import copy
import math
import os
import struct
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.uid import UID, JPEGBaseline8Bit

from slidebank.errors import InvalidInput
from slidebank.geometry import Point, Size
from slidebank.slides.model import SlideInfo
from slidebank.slides.reader import SlideReader
from slidebank.tiles.encoding import chroma_subsampled, encode
from slidebank.tiles.rendering import SCALE_TOLERANCE, Region, render

# Derived-image marks of PS3.3 C.8.12.4.1.1: the third value of a WSI level is VOLUME, the
# fourth says how it was made.
DERIVED_IMAGE_TYPE = ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
# An item's tag and length (PS3.5 A.4), before each frame.
ITEM_HEADER = 8
# (7FE0,0010) Pixel Data, explicit VR little endian: OB, two reserved bytes, undefined length.
PIXEL_DATA_HEADER = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
# Rows of tiles rendered ahead of the writer: enough to keep every core busy, few enough
# that the encoded tiles waiting in memory stay a few megabytes.
ROWS_AHEAD = 2


@dataclass(frozen=True)
class MissingLevel:
    """A power-of-two level the slide does not store, in the stored tiles' size."""

    downsample: int
    size: Size
    tile: Size

    @property
    def grid(self) -> Size:
        return Size(
            -(-self.size.width // self.tile.width), -(-self.size.height // self.tile.height)
        )

    @property
    def frames(self) -> int:
        return self.grid.area


def missing_levels(info: SlideInfo) -> list[MissingLevel]:
    """The power-of-two levels (sized as DeepZoom sizes them) between level 0 and the level
    that fits in one tile which no stored level matches. Only slides whose level 0 has
    square tiles (every DICOM WSI written by the ingest) are completed."""
    tile = info.levels[0].tile_size
    if tile is None or tile.width != tile.height:
        return []
    stored = [level.downsample for level in info.levels]
    found: list[MissingLevel] = []
    width, height = info.dimensions.width, info.dimensions.height
    power = 1
    while True:
        downsample = 2**power
        size = Size(math.ceil(width / downsample), math.ceil(height / downsample))
        if size.width <= tile.width and size.height <= tile.height:
            # One tile: cheap to render on request, not worth an instance.
            return found
        if not any(abs(s - downsample) <= SCALE_TOLERANCE * downsample for s in stored):
            found.append(MissingLevel(downsample, size, tile))
        power += 1


def rendered_tiles(
    reader: SlideReader, level: MissingLevel, quality: int, workers: int
) -> Iterator[bytes]:
    """Every tile of ``level`` as JPEG, row by row, rendered on ``workers`` threads
    (libjpeg-turbo and the reads release the GIL)."""
    tile = level.tile

    def one(column: int, row: int) -> bytes:
        origin = Point(column * tile.width * level.downsample, row * tile.height * level.downsample)
        pixels = render(reader, Region(origin, tile, float(level.downsample)))
        return encode(pixels, "jpeg", quality)

    def whole_row(row: int) -> list[bytes]:
        return [one(column, row) for column in range(level.grid.width)]

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = []
        for row in range(level.grid.height):
            pending.append(pool.submit(whole_row, row))
            if len(pending) > ROWS_AHEAD * max(1, workers):
                yield from pending.pop(0).result()
        for future in pending:
            yield from future.result()


def instance_uid(checksum: str, downsample: int) -> str:
    """The same slide and level always get the same UID (a retry replaces, never adds): a
    name-based UUID (PS3.5 B.2) of the content checksum, which identifies no one."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'slidebank/{checksum}/level/{downsample}').int}"


def write_level(
    template: pydicom.Dataset,
    target: Path,
    level: MissingLevel,
    tiles: Iterator[bytes],
    *,
    uid: str,
    instance_number: int,
    quality: int,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write ``level`` as a DICOM WSI instance at ``target``, its header a copy of the
    level-0 instance's header ``template``; frames (JPEG at ``quality``) are spooled beside
    ``target`` while encoded, and the file is fsynced."""
    if template.get("DimensionOrganizationType") != "TILED_FULL":
        raise InvalidInput(f"{target.name}: only TILED_FULL levels can be extended")
    if (template.Columns, template.Rows) != (level.tile.width, level.tile.height):
        raise InvalidInput(f"{target.name}: frames are not {level.tile.width} px tiles")
    header = copy.deepcopy(template)
    spool = target.with_name(target.name + ".frames")
    lengths: list[int] = []
    try:
        with spool.open("w+b") as frames:
            for data in tiles:
                if len(data) % 2:
                    data += b"\x00"  # items have even lengths; JPEG allows trailing padding
                lengths.append(len(data))
                frames.write(data)
                if progress is not None:
                    progress(1)
            if len(lengths) != level.frames:
                raise InvalidInput(f"{level.frames} tiles expected, {len(lengths)} rendered")
            frames.flush()
            _describe(header, level, uid, instance_number, quality)
            # Offsets of each frame's item from the first item, as PS3.5 A.4 defines them.
            offsets = np.concatenate([[0], np.cumsum(np.asarray(lengths[:-1]) + ITEM_HEADER)])
            header.ExtendedOffsetTable = offsets.astype("<u8").tobytes()
            header.ExtendedOffsetTableLengths = np.asarray(lengths, dtype="<u8").tobytes()
            header.save_as(target, enforce_file_format=True)
            with target.open("ab") as out:
                _append_pixel_data(out, frames, lengths)
                out.flush()
                os.fsync(out.fileno())
    finally:
        spool.unlink(missing_ok=True)


def _append_pixel_data(out: BinaryIO, frames: BinaryIO, lengths: list[int]) -> None:
    """Encapsulated Pixel Data (PS3.5 A.4) after the header pydicom wrote: an empty basic
    offset table (the extended one is in the header), one item per frame, the delimiter.
    Written here because pydicom's streaming writer (``encapsulate_extended_buffer``) slows
    down with the number of frames: 157 MB of a 35,000-frame level took 5 minutes."""
    out.write(PIXEL_DATA_HEADER)
    out.write(struct.pack("<HHI", 0xFFFE, 0xE000, 0))
    frames.seek(0)
    for length in lengths:
        out.write(struct.pack("<HHI", 0xFFFE, 0xE000, length))
        out.write(frames.read(length))
    out.write(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))


def _describe(
    header: pydicom.Dataset, level: MissingLevel, uid: str, number: int, quality: int
) -> None:
    columns, rows = int(header.TotalPixelMatrixColumns), int(header.TotalPixelMatrixRows)
    header.SOPInstanceUID = UID(uid)
    header.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    header.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    header.InstanceNumber = number
    header.ImageType = DERIVED_IMAGE_TYPE
    header.TotalPixelMatrixColumns = level.size.width
    header.TotalPixelMatrixRows = level.size.height
    header.NumberOfFrames = level.frames
    # encode() writes YCbCr JPEG, its chroma halved or not by the quality.
    header.PhotometricInterpretation = "YBR_FULL_422" if chroma_subsampled(quality) else "YBR_FULL"
    header.LossyImageCompression = "01"
    header.LossyImageCompressionMethod = "ISO_10918_1"
    header.DerivationDescription = (
        f"Downsampled {level.downsample}x from the stored levels by Slidebank"
    )
    if "LossyImageCompressionRatio" in header:
        del header.LossyImageCompressionRatio
    # The physical extent is unchanged, so the spacing grows as the matrix shrinks
    # (PixelSpacing is row spacing, then column spacing).
    measures = header.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    row_spacing, column_spacing = (float(v) for v in measures.PixelSpacing)
    measures.PixelSpacing = [
        _ds(row_spacing * rows / level.size.height),
        _ds(column_spacing * columns / level.size.width),
    ]


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters (the DS limit)."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.9e}"
