"""wsidicom's pyramid writer, writing pixel data a batch of frames at a time.

wsidicom 0.31 writes every frame on its own: a copy of the frame behind its item header, a
``tell`` and a ``write`` through fsspec, each on the level's writer thread, and each giving
up the GIL and waiting to get it back from the thread that reads the source. For the 2 GB
SVS of the ingest benchmark that is 50,000 hand-offs, and the writer thread, not the disk,
set the pace of the conversion. Its Extended Offset Table is reserved and filled 8 bytes per
call, 200,000 calls for that slide. Nothing in its API batches either, so the classes
here replace those two steps in subclasses: the frames that wsidicom hands over together
(a row of up to ``PASSTHROUGH_CHUNK_TILES``) leave in one ``write``, and each half of the
table in one. The bytes of every frame and item are the ones wsidicom writes; the table's
lengths are the standard's (each frame's item value length; wsidicom counts the next item's
header into all but the last), which readers that take the lengths read right, and wsidicom's
own reader, which takes only the offsets, reads as before.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.tag import ItemTag
from pydicom.uid import UID
from wsidicom.file.file_writer import PyramidFileWriter
from wsidicom.file.io.frame_index import EotWriter, OffsetTableType, OffsetTableWriter
from wsidicom.file.io.wsidicom_writer import (
    EncapsulatedPixelDataWriter,
    NativePixelDataWriter,
    PixelDataWriter,
    WsiDicomWriter,
)
from wsidicom.file.wsidicom_stream_opener import WsiDicomStreamOpener
from wsidicom.tags import ExtendedOffsetTableLengthsTag, ExtendedOffsetTableTag, PixelDataTag

ITEM_HEADER = 8
_ITEM_TAG = b"\xfe\xff\x00\xe0"  # (FFFE,E000), little endian
_LENGTH = struct.Struct("<I").pack
TABLE_ENTRY = 8  # an unsigned 64-bit offset or length


class BlockEotWriter(EotWriter):  # type: ignore[misc]  # wsidicom is untyped here
    """The Extended Offset Table and its lengths, each reserved and written in one call."""

    def reserve(self, number_of_frames: int) -> None:
        self._table_start = self._file.tell()
        size = TABLE_ENTRY * number_of_frames
        for tag in (ExtendedOffsetTableTag, ExtendedOffsetTableLengthsTag):
            self._file.write_tag_of_vr_and_length(tag, "OV", size)
            self._file.write(bytes(size))

    def write(
        self, pixel_data_start: int, frame_positions: Sequence[int], last_frame_end: int
    ) -> None:
        """``frame_positions``: where each frame's item header is; ``last_frame_end``: the
        end of the last frame's item."""
        positions = np.asarray(frame_positions, dtype=np.int64)
        offsets = positions - pixel_data_start
        lengths = np.empty_like(positions)
        lengths[:-1] = np.diff(positions) - ITEM_HEADER
        lengths[-1] = last_frame_end - (positions[-1] + ITEM_HEADER)
        if offsets[0] < 0 or lengths.min() < 0:
            raise ValueError(
                f"{self._file.filepath}: frame positions out of order for the offset table"
            )
        size = TABLE_ENTRY * len(positions)
        self._file.seek(self._table_start)
        for tag, values in (
            (ExtendedOffsetTableTag, offsets),
            (ExtendedOffsetTableLengthsTag, lengths),
        ):
            self._file.check_tag_and_length(tag, size, True, True)
            self._file.write(values.astype("<u8").tobytes())


class BatchPixelDataWriter(EncapsulatedPixelDataWriter):  # type: ignore[misc]  # wsidicom is untyped here
    """Encapsulated pixel data whose frames are written a batch at a time."""

    def _write_pixel_data_start(self, frame_count: int) -> tuple[int, OffsetTableWriter | None]:
        if self._offset_table != OffsetTableType.EXTENDED:
            started: tuple[int, OffsetTableWriter | None] = super()._write_pixel_data_start(
                frame_count
            )
            return started
        table = BlockEotWriter(self._file)
        table.reserve(frame_count)
        self._file.write_tag_of_vr_and_length(PixelDataTag, "OB")
        self._file.write_tag(ItemTag)  # the empty Basic Offset Table
        self._file.write_UL(0)
        return self._file.tell(), table

    def write_frames(self, frames: Iterable[bytes], positions: list[int]) -> int:
        """Write each frame as one item (padded to an even length, as PS3.5 A.4 asks) and
        append where each item starts to ``positions``; returns how many were written."""
        position = self._file.tell()
        parts: list[bytes] = []
        count = 0
        for frame in frames:
            size = len(frame)
            odd = size & 1
            positions.append(position)
            parts.append(_ITEM_TAG + _LENGTH(size + odd))
            parts.append(frame)
            if odd:
                parts.append(b"\x00")
            position += ITEM_HEADER + size + odd
            count += 1
        self._file.write(b"".join(parts))
        return count


class BatchWsiDicomWriter(WsiDicomWriter):  # type: ignore[misc]  # wsidicom is untyped here
    """A DICOM WSI file whose encapsulated frames go to disk a batch at a time."""

    def write_tiles(self, tiles: Iterable[bytes]) -> int:
        if isinstance(self._pixel_data_writer, BatchPixelDataWriter):
            return self._pixel_data_writer.write_frames(tiles, self._frame_positions)
        count: int = super().write_tiles(tiles)
        return count

    @classmethod
    def open(
        cls,
        file: str | Path | Any,
        transfer_syntax: UID,
        offset_table: OffsetTableType,
        file_options: dict[str, Any] | None = None,
    ) -> BatchWsiDicomWriter:
        stream = WsiDicomStreamOpener(file_options).open_for_writing(file, "w+b", transfer_syntax)
        pixels: PixelDataWriter
        if transfer_syntax.is_encapsulated:
            pixels = BatchPixelDataWriter(stream, offset_table, transfer_syntax, file_options)
        else:
            pixels = NativePixelDataWriter(stream)
        return cls(stream, transfer_syntax, pixels)


class BatchPyramidFileWriter(PyramidFileWriter):  # type: ignore[misc]  # wsidicom is untyped here
    """wsidicom's pyramid writer with ``BatchWsiDicomWriter`` files.

    ``_prepare_writer`` is wsidicom's own (0.31) but for the class it opens: it names
    ``WsiDicomWriter`` directly, so there is no smaller place to choose the file writer."""

    def _prepare_writer(
        self,
        level_writer: Any,
        instance_number: int,
        transfer_syntax: UID,
        offset_table: OffsetTableType,
    ) -> WsiDicomWriter:
        uid = self._uid_generator.sop_uid(level_writer.dataset)
        file_writer = BatchWsiDicomWriter.open(
            self._output_path.joinpath(uid + ".dcm"),
            transfer_syntax,
            offset_table,
            self._file_options,
        )
        try:
            level_writer.dataset.SOPInstanceUID = uid
            level_writer.dataset.InstanceNumber = instance_number
            file_writer.write_header(level_writer.dataset)
            file_writer.start_pixel_data(level_writer.dataset)
        except BaseException:
            file_writer.close()
            raise
        return file_writer
